//! tract against onnxruntime on genuine CLIP architectures with random weights.
//!
//! The fixtures (`tests/data/models/*`, made by `models/tools/export_fixtures.py`) hold each
//! tower as fp32, onnxruntime-dynamic int8 and static QDQ int8, and onnxruntime's outputs for fixed
//! inputs. Thresholds: cosine >= 0.9999 for fp32 and >= 0.999 for dynamic int8 (the issue's); for
//! QDQ, tract is compared with onnxruntime running the same QDQ file.

mod common;

use common::{Reference, cosine, data};
use edgeclip::model::{Bundle, ImageEncoder, Precision, TextEncoder};

fn check_image_tower(fixture: &str, precision: Precision, min_cos: f32) -> f32 {
    let bundle = Bundle::load(data(&format!("models/{fixture}"))).unwrap();
    let reference = Reference::open(&bundle.dir().join("reference.safetensors"));
    let (shape, pixels) = reference.f32("pixel_values");
    let (_, expected) = reference.f32(&format!("image_embeds.{precision}"));
    let encoder = ImageEncoder::load(&bundle, Some(precision)).unwrap();
    assert_eq!(encoder.precision(), precision);
    let per_image = shape[1..].iter().product::<usize>();
    let dim = bundle.embed_dim();
    let mut worst = 1.0f32;
    for n in 0..shape[0] {
        let got = encoder
            .encode(&pixels[n * per_image..(n + 1) * per_image])
            .unwrap();
        let cos = cosine(&got, &expected[n * dim..(n + 1) * dim]);
        eprintln!("{fixture} {precision} image {n}: cosine(tract, onnxruntime) = {cos:.6}");
        worst = worst.min(cos);
    }
    assert!(
        worst >= min_cos,
        "{fixture} {precision}: cosine {worst} < {min_cos}"
    );
    worst
}

#[test]
fn hf_clip_image_fp32_matches_onnxruntime() {
    check_image_tower("hf-clip-tiny", Precision::Fp32, 0.9999);
}

#[test]
fn hf_clip_image_dynamic_int8_matches_onnxruntime() {
    check_image_tower("hf-clip-tiny", Precision::Int8Dynamic, 0.999);
}

#[test]
fn fastvit_image_fp32_matches_onnxruntime() {
    check_image_tower("fastvit-tiny", Precision::Fp32, 0.9999);
}

#[test]
fn fastvit_image_dynamic_int8_matches_onnxruntime() {
    check_image_tower("fastvit-tiny", Precision::Int8Dynamic, 0.999);
}

#[test]
fn hf_clip_text_matches_onnxruntime() {
    let bundle = Bundle::load(data("models/hf-clip-tiny")).unwrap();
    let reference = Reference::open(&bundle.dir().join("reference.safetensors"));
    let (shape, ids) = reference.i64("input_ids");
    for (precision, min_cos) in [(Precision::Fp32, 0.9999), (Precision::Int8Dynamic, 0.999)] {
        let (_, expected) = reference.f32(&format!("text_embeds.{precision}"));
        let encoder = TextEncoder::load(&bundle, Some(precision)).unwrap();
        let (l, dim) = (shape[1], bundle.embed_dim());
        for n in 0..shape[0] {
            let got = encoder.encode(&ids[n * l..(n + 1) * l]).unwrap();
            let cos = cosine(&got, &expected[n * dim..(n + 1) * dim]);
            eprintln!("text {precision} {n}: {cos:.6}");
            assert!(cos >= min_cos, "text {precision} row {n}: cosine {cos}");
        }
    }
}

#[test]
fn our_tokenizer_gives_the_reference_input_ids() {
    let bundle = Bundle::load(data("models/hf-clip-tiny")).unwrap();
    let reference = Reference::open(&bundle.dir().join("reference.safetensors"));
    let (shape, ids) = reference.i64("input_ids");
    let texts = [
        "a photo of a cat",
        "an empty scene",
        "a red circle next to a blue square",
    ];
    assert_eq!(shape[0], texts.len());
    for (n, text) in texts.iter().enumerate() {
        let ours = edgeclip::prompts::ClipTokenizer::shared().tokenize(text, shape[1]);
        assert_eq!(ours, ids[n * shape[1]..(n + 1) * shape[1]], "{text}");
    }
}

/// QDQ on the transformer (MatMul-only quantization, per-channel weights): tract against
/// onnxruntime on the same QDQ file, and against the fp32 model's output.
///
/// Not asserted for the FastViT fixture: tract 0.23.9 runs its QDQ graph to an output unrelated to
/// onnxruntime's (cosine ~0.26, while onnxruntime's QDQ output is 0.99 from fp32). Bisected by
/// quantizing fewer op types: Conv-only and Gemm-only QDQ are fine in tract; the QDQ MatMuls of
/// the attention stage are what diverges. Open (see the core-runtime issue); printed by
/// `qdq_convnet_divergence`.
#[test]
fn qdq_int8_transformer_matches_onnxruntime_and_fp32() {
    for fixture in ["hf-clip-tiny"] {
        let bundle = Bundle::load(data(&format!("models/{fixture}"))).unwrap();
        let reference = Reference::open(&bundle.dir().join("reference.safetensors"));
        let (shape, pixels) = reference.f32("pixel_values");
        let (_, ort_qdq) = reference.f32("image_embeds.int8-qdq");
        let (_, ort_fp32) = reference.f32("image_embeds.fp32");
        let encoder = ImageEncoder::load(&bundle, Some(Precision::Int8Qdq)).unwrap();
        let per_image = shape[1..].iter().product::<usize>();
        let dim = bundle.embed_dim();
        for n in 0..shape[0] {
            let got = encoder
                .encode(&pixels[n * per_image..(n + 1) * per_image])
                .unwrap();
            let vs_ort = cosine(&got, &ort_qdq[n * dim..(n + 1) * dim]);
            let vs_fp32 = cosine(&got, &ort_fp32[n * dim..(n + 1) * dim]);
            let ort_vs_fp32 = cosine(
                &ort_qdq[n * dim..(n + 1) * dim],
                &ort_fp32[n * dim..(n + 1) * dim],
            );
            eprintln!(
                "{fixture} qdq image {n}: tract vs ort-qdq {vs_ort:.4}, tract vs fp32 {vs_fp32:.4}, ort-qdq vs fp32 {ort_vs_fp32:.4}"
            );
            assert!(
                vs_ort >= 0.999,
                "{fixture}: tract's QDQ output drifted from onnxruntime's: {vs_ort}"
            );
            assert!(
                vs_fp32 >= 0.99,
                "{fixture}: tract's QDQ output is {vs_fp32} from fp32"
            );
        }
    }
}

/// Prints how far tract's QDQ FastViT is from onnxruntime's; asserts only that it loads and runs.
#[test]
fn qdq_convnet_divergence() {
    let bundle = Bundle::load(data("models/fastvit-tiny")).unwrap();
    let reference = Reference::open(&bundle.dir().join("reference.safetensors"));
    let (shape, pixels) = reference.f32("pixel_values");
    let (_, ort_qdq) = reference.f32("image_embeds.int8-qdq");
    let encoder = ImageEncoder::load(&bundle, Some(Precision::Int8Qdq)).unwrap();
    let per_image = shape[1..].iter().product::<usize>();
    let got = encoder.encode(&pixels[..per_image]).unwrap();
    assert_eq!(got.len(), bundle.embed_dim());
    assert!(got.iter().all(|v| v.is_finite()));
    eprintln!(
        "fastvit-tiny qdq: cosine(tract, onnxruntime) = {:.4}",
        cosine(&got, &ort_qdq[..bundle.embed_dim()])
    );
}
