//! edgeclip's patches to tract-core 0.23.9 (see `vendor/README.md` in edgeclip's repository).
//!
//! Each patch keeps tract's results bit for bit (the one exception: a quantised value whose
//! scaled input is beyond `i32`, where tract's own sum wraps around and the patch clamps).
//! `TRACT_EDGECLIP_PATCHES_OFF=1` turns them all off, so one binary measures before and after
//! in the same run.

crate::declare_knob!(
    TRACT_EDGECLIP_PATCHES_OFF,
    bool,
    false,
    "edgeclip: run tract-core's own code where edgeclip's patches replace it (for A/B measurements)."
);

/// Whether the patches run (read once per process).
pub fn on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| !TRACT_EDGECLIP_PATCHES_OFF.get())
}
