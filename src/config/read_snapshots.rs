//! The `[snapshots]` table, read like every other table of [`super::read`] (each key once, with
//! its type, default and meaning), in a file of its own so that `read.rs` stays under the size
//! limit.

use std::path::PathBuf;

use super::SnapshotsConfig;
use super::reader::{Reader, Section, key};

/// Reads `[snapshots]` from the root table (all its keys have defaults); `dir` is left as
/// written (the caller resolves it against the config file's folder).
pub(super) fn read(r: &mut Reader, root: &mut Section) -> SnapshotsConfig {
    let mut s = r.defaults_table(
        root,
        key(
            "snapshots",
            "A JPEG of every start event: the best-scoring frame of the event's first \
             `window_s` seconds, written to `DIR/CAMERA/LABEL/TIMESTAMP.jpg`, named in the \
             event's `snapshot` field and published (retained) to `PREFIX/CAMERA/LABEL/snapshot`. \
             Read at start-up (a reload keeps the current settings).",
        ),
    );
    let enabled = r.or(
        &mut s,
        key(
            "enabled",
            "Write a snapshot of every start event. An unwritable folder stops the daemon at \
             start-up.",
        ),
        true,
    );
    let dir = r.opt::<PathBuf>(
        &mut s,
        key(
            "dir",
            "The snapshot folder. Not set: `snapshots` in the daemon's state folder \
                 (`/var/lib/edgeclip` under systemd, else `$XDG_DATA_HOME/edgeclip` or \
                 `~/.local/share/edgeclip`).",
        )
        .example("\"/var/lib/edgeclip/snapshots\""),
    );
    let max_count = r.or(
        &mut s,
        key(
            "max_count",
            "Most snapshot files kept for the camera (all its labels together); after each \
             write the oldest are deleted.",
        ),
        1000,
    );
    let max_mb = r.or(
        &mut s,
        key(
            "max_mb",
            "Most megabytes (10^6 bytes) of snapshot files kept for the camera; after each \
             write the oldest are deleted (the newest file is always kept).",
        ),
        200,
    );
    let window_s = r.or(
        &mut s,
        key(
            "window_s",
            "Seconds after a start during which the best-scoring frame of the label is sought \
             (an earlier end closes the window); 0 takes the start frame. The file appears \
             when the window closes.",
        ),
        1.0,
    );
    let jpeg_quality = r.or(
        &mut s,
        key(
            "jpeg_quality",
            "JPEG quality (1 to 100) of frames that must be encoded (raw camera formats); a \
             camera's own JPEG frames are kept as they came.",
        ),
        85,
    );
    let config = SnapshotsConfig {
        enabled,
        dir,
        max_count,
        max_mb,
        window_s,
        jpeg_quality,
    };
    r.finish(s);
    config
}
