//! The int8 towers run with every large allocation flush against an inaccessible page, so that a
//! matrix kernel reading past the end of a packed buffer is a segmentation fault every time.
//!
//! tract-linalg 0.23.9's x86-64 AMX int8 kernels load their B operand 64 values of k at a time
//! and read up to `60 * r` bytes past a `PackedI8K4` buffer whose k is not a multiple of 64.
//! That crashed 1 run in 12 of `tests/snapshots.rs` on a Sapphire Rapids CPU, where it depended
//! on where the allocator happened to put the buffer. vendor/tract-core allocates every such
//! buffer that much longer (`i8k4_read_slack`, vendor/README.md). Here this test binary's
//! allocator places each allocation of a page or more so that it ends where a `PROT_NONE` page
//! begins (as Electric Fence does), and the int8 files the tests ship run through both paths that
//! pack int8 activations: the demo's int8-static file (integer convolutions, the eager im2col)
//! and the tiny ViT's and FastViT's dynamic-int8 files (matrix products, `OptMatMulPack`). Each
//! output is also checked against onnxruntime's.
//!
//! On a CPU with AMX int8 this process died before the fix, on every run; on other CPUs the
//! kernels read within their panels, and it checks that they still do. It prints which case ran.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};

use common::{cosine, data};
use edgeclip::model::Precision;

/// Allocations of a page or more end flush against a guard page; smaller ones go to `System`.
struct GuardPages;

/// The page size (4 KiB on x86-64; 16 KiB on a Raspberry Pi 5's kernel).
fn page() -> usize {
    // SAFETY: sysconf reads a value the kernel gave the process; it allocates nothing.
    #[allow(unsafe_code)]
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(page).unwrap_or(4096)
}

impl GuardPages {
    /// Whether `layout` gets guard pages: a page or more, aligned to at most a page.
    fn guarded(layout: Layout) -> bool {
        layout.size() >= page() && layout.align() <= page()
    }

    /// The whole mapping behind an allocation of `layout`: room for the value and its alignment,
    /// then the guard page.
    fn mapping_len(layout: Layout) -> usize {
        (layout.size() + layout.align()).div_ceil(page()) * page() + page()
    }
}

// SAFETY: `alloc` returns either `System`'s block or a block of `layout.size()` bytes, aligned to
// `layout.align()` (at most a page here, since the mapping is page-aligned and the pointer is
// rounded down from the guard page), inside a fresh mapping that nothing else uses; `dealloc`
// unmaps exactly that mapping, found again from the same layout.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for GuardPages {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::guarded(layout) {
            return unsafe { System.alloc(layout) };
        }
        let len = Self::mapping_len(layout);
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let guard = unsafe { base.cast::<u8>().add(len - page()) };
        if unsafe { libc::mprotect(guard.cast(), page(), libc::PROT_NONE) } != 0 {
            unsafe { libc::munmap(base, len) };
            return std::ptr::null_mut();
        }
        // The value's last byte is the one before the guard page, give or take the alignment.
        let start = (guard as usize - layout.size()) & !(layout.align() - 1);
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !Self::guarded(layout) {
            return unsafe { System.dealloc(ptr, layout) };
        }
        let len = Self::mapping_len(layout);
        // `start` lies in the mapping's first `len - page()` bytes, at most `size + align` before
        // the guard page: the mapping begins at the guard page less `len - page()`.
        let guard = (ptr as usize + layout.size()).next_multiple_of(page());
        unsafe { libc::munmap((guard - (len - page())) as *mut libc::c_void, len) };
    }
}

#[global_allocator]
static GUARDED: GuardPages = GuardPages;

fn cpu_has_amx_int8() -> bool {
    std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| info.contains(" amx_int8"))
}

/// The image tower of the bundle in `bundle_dir` at `precision` on the images of `reference`,
/// against onnxruntime's embeddings of them (`key` in the same file).
fn check(bundle_dir: &std::path::Path, reference: &str, key: &str, precision: Precision) {
    let (reference, got, dim) = common::image_embeddings(bundle_dir, &data(reference), precision);
    let (_, expected) = reference.f32(key);
    for (n, got) in got.iter().enumerate() {
        let cos = cosine(got, &expected[n * dim..(n + 1) * dim]);
        eprintln!(
            "{} {precision} image {n}, guarded allocations: cosine to onnxruntime {cos:.6}",
            bundle_dir.display()
        );
        assert!(cos >= 0.999, "{}: cosine {cos}", bundle_dir.display());
    }
}

#[test]
fn int8_towers_read_nothing_past_their_packed_buffers() {
    eprintln!(
        "AMX int8 on this CPU: {}",
        if cpu_has_amx_int8() {
            "yes (the kernels that read 64 values of k at a time run)"
        } else {
            "no"
        }
    );
    check(
        &common::root().join("models/demo"),
        "models/demo-reference.safetensors",
        "image_embeds.int8-static",
        Precision::Int8Static,
    );
    for fixture in ["hf-clip-tiny", "fastvit-tiny"] {
        check(
            &data(&format!("models/{fixture}")),
            &format!("models/{fixture}/reference.safetensors"),
            "image_embeds.int8-dynamic",
            Precision::Int8Dynamic,
        );
    }
}
