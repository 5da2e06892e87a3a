//! Bad input through the real binary: each case must end with a non-zero exit code and a one-line
//! error that names the file and the problem, never a panic.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::data;

fn edgeclip(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgeclip"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run edgeclip");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts a clean failure whose error line contains every one of `needles`.
fn fails_with(args: &[&str], needles: &[&str]) {
    let (code, _, stderr) = edgeclip(args);
    assert_ne!(code, 0, "{args:?} succeeded");
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    for n in needles {
        assert!(
            line.contains(n),
            "{args:?}: error line lacks {n:?}:\n{line}"
        );
    }
}

/// A copy of the hf-clip-tiny fixture bundle in a temporary folder, to break. Its default image
/// file is `visual.onnx` (fp32); a CPU with int8 dot products runs its dynamic int8 variant
/// unless told otherwise, so the tests that break `visual.onnx` ask for `--precision fp32`.
fn bundle_copy() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("bundle");
    std::fs::create_dir(&b).unwrap();
    for f in [
        "bundle.toml",
        "visual.onnx",
        "textual.onnx",
        "visual.int8-dynamic.onnx",
        "visual.int8-qdq.onnx",
        "textual.int8-dynamic.onnx",
    ] {
        std::fs::copy(data("models/hf-clip-tiny").join(f), b.join(f)).unwrap();
    }
    (dir, b)
}

fn edit_manifest(bundle: &Path, from: &str, to: &str) {
    let p = bundle.join("bundle.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{from:?} not in the manifest");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn image() -> String {
    data("preprocess/square_astronaut.jpg")
        .to_string_lossy()
        .into_owned()
}

/// `classify --precision fp32` on the bundle `b` (so that `visual.onnx` is the file loaded,
/// whatever the CPU) fails cleanly with `needles` in its error line.
fn classify_fp32_fails_with(b: &Path, needles: &[&str]) {
    let image = image();
    let args = [
        "classify",
        "--model",
        s(b),
        "--precision",
        "fp32",
        "--prompt",
        "a cat",
        &image,
    ];
    fails_with(&args, needles);
}

#[test]
fn missing_onnx_file() {
    let (_d, b) = bundle_copy();
    std::fs::remove_file(b.join("visual.onnx")).unwrap();
    fails_with(
        &["info", "--model", s(&b)],
        &["bundle.toml", "image.onnx", "visual.onnx", "does not exist"],
    );
}

#[test]
fn corrupt_onnx_file() {
    let (_d, b) = bundle_copy();
    std::fs::write(
        b.join("visual.onnx"),
        b"this is not a protobuf at all \xff\xfe",
    )
    .unwrap();
    classify_fp32_fails_with(&b, &["visual.onnx", "parsing the ONNX file"]);
}

#[test]
fn truncated_onnx_file() {
    let (_d, b) = bundle_copy();
    let bytes = std::fs::read(b.join("visual.onnx")).unwrap();
    std::fs::write(b.join("visual.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    classify_fp32_fails_with(&b, &["visual.onnx"]);
}

#[test]
fn manifest_with_unknown_key() {
    let (_d, b) = bundle_copy();
    edit_manifest(&b, "embed_dim = 32", "embed_dim = 32\nembedding_size = 32");
    fails_with(
        &["info", "--model", s(&b)],
        &["bundle.toml", "unknown field `embedding_size`"],
    );
}

#[test]
fn manifest_with_missing_key() {
    let (_d, b) = bundle_copy();
    edit_manifest(&b, "logit_scale = 100.0\n", "");
    fails_with(
        &["info", "--model", s(&b)],
        &["bundle.toml", "missing field `logit_scale`"],
    );
}

#[test]
fn manifest_whose_input_size_disagrees_with_the_graph() {
    let (_d, b) = bundle_copy();
    edit_manifest(&b, "height = 224", "height = 256");
    classify_fp32_fails_with(&b, &["visual.onnx", "pixel_values"]);
}

#[test]
fn manifest_whose_embed_dim_disagrees_with_the_graph() {
    let (_d, b) = bundle_copy();
    edit_manifest(&b, "embed_dim = 32", "embed_dim = 64");
    fails_with(
        &["classify", "--model", s(&b), "--prompt", "a cat", &image()],
        &["onnx", "embed_dim"],
    );
}

#[test]
fn replaced_weights_fail_the_fingerprint() {
    let (_d, b) = bundle_copy();
    std::fs::copy(b.join("textual.int8-dynamic.onnx"), b.join("textual.onnx")).unwrap();
    fails_with(
        &["info", "--model", s(&b)],
        &["bundle.toml", "fingerprint", "textual.onnx"],
    );
}

#[test]
fn embeddings_from_another_bundle() {
    // Embeddings of the demo bundle (another fingerprint and width) used with the fixture.
    let (_d, b) = bundle_copy();
    let other = common::root().join("models/demo/prompts.safetensors");
    fails_with(
        &[
            "classify",
            "--model",
            s(&b),
            "--embeddings",
            s(&other),
            &image(),
        ],
        &["prompts.safetensors", "fingerprint"],
    );
}

#[test]
fn embeddings_of_another_dimension() {
    // Same fingerprint, other width: written by hand with the library.
    let (d, b) = bundle_copy();
    let bundle = edgeclip::model::Bundle::load(&b).unwrap();
    let mut e = edgeclip::prompts::PromptEmbeddings::empty(bundle.fingerprint(), 16);
    e.insert("a cat", vec![1.0; 16]);
    let path = d.path().join("wide.safetensors");
    e.save(&path).unwrap();
    fails_with(
        &[
            "classify",
            "--model",
            s(&b),
            "--embeddings",
            s(&path),
            &image(),
        ],
        &["wide.safetensors", "width 16"],
    );
}

#[test]
fn not_an_embeddings_file() {
    let (_d, b) = bundle_copy();
    let path = b.join("bundle.toml");
    fails_with(
        &[
            "classify",
            "--model",
            s(&b),
            "--embeddings",
            s(&path),
            &image(),
        ],
        &["bundle.toml", "not a prompt embeddings file"],
    );
}

#[test]
fn unreadable_and_non_image_files() {
    let (d, b) = bundle_copy();
    let missing = d.path().join("nope.jpg");
    fails_with(
        &[
            "classify",
            "--model",
            s(&b),
            "--prompt",
            "a cat",
            s(&missing),
        ],
        &["nope.jpg"],
    );
    let text = d.path().join("notes.jpg");
    std::fs::write(&text, "hello, I am text").unwrap();
    fails_with(
        &["classify", "--model", s(&b), "--prompt", "a cat", s(&text)],
        &["notes.jpg", "not a decodable image"],
    );
}

/// Issue 25: an image declaring 16000 x 16000 in a 1.5 MB file is refused from its header, before
/// the decoder allocates 768 MB for it, with the file and the declared size in the error.
#[test]
fn an_image_over_the_pixel_cap_is_refused_from_its_header() {
    let (d, b) = bundle_copy();
    let mut bomb = std::fs::read(image()).unwrap();
    let sof = bomb
        .windows(2)
        .position(|w| w == [0xFF, 0xC0] || w == [0xFF, 0xC2])
        .unwrap();
    bomb[sof + 5..sof + 9].copy_from_slice(&16000u16.to_be_bytes().repeat(2));
    let file = d.path().join("bomb.jpg");
    std::fs::write(&file, bomb).unwrap();
    fails_with(
        &["classify", "--model", s(&b), "--prompt", "a cat", s(&file)],
        &[
            "bomb.jpg: declares 16000x16000 pixels",
            "over the limit of 40000000 pixels on images",
        ],
    );
}

#[test]
fn missing_bundle_folder() {
    fails_with(
        &["info", "--model", "/nonexistent/bundle"],
        &["/nonexistent/bundle/bundle.toml"],
    );
}
