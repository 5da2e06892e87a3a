use std::path::Path;

use super::shares;
use crate::model::{Bundle, ImageEncoder, ModelError, Precision};

fn demo(precision: Precision) -> ImageEncoder {
    let bundle = Bundle::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo")).unwrap();
    ImageEncoder::load(&bundle, Some(precision)).unwrap()
}

/// `n` different images, in the range of normalised pixels (a fixed pseudo-random sequence).
fn images(encoder: &ImageEncoder, n: usize) -> Vec<f32> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n * encoder.input_len())
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// Each image's embedding from its own `encode_into` call.
fn singles(encoder: &ImageEncoder, pixels: &[f32]) -> Vec<f32> {
    pixels
        .chunks_exact(encoder.input_len())
        .flat_map(|p| encoder.encode(p).unwrap())
        .collect()
}

#[test]
fn shares_are_even_larger_first_and_never_empty() {
    assert_eq!(shares(8, 1), [8]);
    assert_eq!(shares(8, 2), [4, 4]);
    assert_eq!(shares(3, 2), [2, 1]);
    assert_eq!(shares(5, 4), [2, 1, 1, 1]);
    assert_eq!(shares(2, 4), [1, 1]);
    assert_eq!(shares(1, 0), [1]);
}

/// A batch gives every image the embedding it gets alone, to the bit, with one worker or
/// several, image by image or (the demo's towers have a symbolic batch axis) in one call.
#[test]
fn a_batch_equals_its_images_one_by_one_with_any_number_of_workers() {
    for (precision, one_call) in [
        (Precision::Int8Static, false),
        (Precision::Int8Static, true),
        (Precision::Fp32, true),
    ] {
        let mut encoder = demo(precision);
        assert!(encoder.one_call_batches().is_err(), "off at load");
        encoder.set_one_call_batches(one_call).unwrap();
        assert_eq!(encoder.one_call_batches().is_ok(), one_call, "{precision}");
        for n in [1, 2, 5, 8] {
            let pixels = images(&encoder, n);
            let want = singles(&encoder, &pixels);
            for workers in [1, 2, 3] {
                encoder.set_workers(workers);
                assert_eq!(encoder.workers(), workers);
                let mut out = vec![f32::NAN; n * encoder.dim()];
                encoder.encode_batch_into(&pixels, &mut out).unwrap();
                let same = want
                    .iter()
                    .zip(&out)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{precision}, one call {one_call}, {n} images, {workers} workers: the batch \
                     differs from the singles"
                );
            }
            encoder.set_workers(1);
        }
    }
}

/// The images of a batch stay in their order: swapping two images swaps their embeddings.
#[test]
fn embeddings_come_out_in_the_order_of_the_images() {
    let mut encoder = demo(Precision::Int8Static);
    encoder.set_workers(2);
    encoder.set_one_call_batches(true).unwrap();
    let len = encoder.input_len();
    let pixels = images(&encoder, 3);
    let mut swapped = pixels.clone();
    swapped[..len].copy_from_slice(&pixels[2 * len..]);
    swapped[2 * len..].copy_from_slice(&pixels[..len]);
    let dim = encoder.dim();
    let (mut a, mut b) = (vec![0.0; 3 * dim], vec![0.0; 3 * dim]);
    encoder.encode_batch_into(&pixels, &mut a).unwrap();
    encoder.encode_batch_into(&swapped, &mut b).unwrap();
    assert_ne!(
        a[..dim],
        a[2 * dim..],
        "two different images, two embeddings"
    );
    assert_eq!(a[..dim], b[2 * dim..]);
    assert_eq!(a[2 * dim..], b[..dim]);
    assert_eq!(a[dim..2 * dim], b[dim..2 * dim]);
}

#[test]
fn an_empty_batch_does_nothing() {
    let mut encoder = demo(Precision::Int8Static);
    let mut out: Vec<f32> = Vec::new();
    encoder.encode_batch_into(&[], &mut out).unwrap();
    encoder.set_workers(4);
    encoder.encode_batch_into(&[], &mut out).unwrap();
}

/// A pixel slice that is not a whole number of images, or an output of the wrong length, is an
/// error naming the tower's file and the lengths, and nothing is run.
#[test]
fn a_partial_image_or_a_wrong_output_length_is_an_error_naming_the_file() {
    let encoder = demo(Precision::Int8Static);
    let (len, dim) = (encoder.input_len(), encoder.dim());
    let pixels = vec![0.0; 2 * len + 7];
    let mut out = vec![0.0; 2 * dim];
    let err = encoder.encode_batch_into(&pixels, &mut out).unwrap_err();
    assert!(matches!(err, ModelError::Shape { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("visual.onnx"), "{message}");
    assert!(message.contains(&format!("{}", 2 * len + 7)), "{message}");
    assert!(message.contains(&format!("{len} values")), "{message}");

    let pixels = vec![0.0; 2 * len];
    let mut short = vec![0.0; 2 * dim - 1];
    let err = encoder.encode_batch_into(&pixels, &mut short).unwrap_err();
    assert!(
        err.to_string().contains(&format!("{}", 2 * dim - 1)),
        "{err}"
    );
}

/// The tiny CLIP fixture's ViT (attention, layer norms): one-call batches of its QDQ int8 tower
/// equal the singles to the bit; of its fp32 tower within 4 ulps of the largest component
/// (measured: 3.6e-7 at components up to 3.0, 1.5 ulps: tract's batched plan sums some
/// products in another order). Its dynamic int8 tower is refused one call (its activation
/// scales would come from the whole batch) and runs image by image, exact.
#[test]
fn a_vit_batch_equals_its_images_one_by_one() {
    let bundle =
        Bundle::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/models/hf-clip-tiny"))
            .unwrap();
    for precision in [Precision::Fp32, Precision::Int8Qdq, Precision::Int8Dynamic] {
        let mut encoder = ImageEncoder::load(&bundle, Some(precision)).unwrap();
        encoder.set_one_call_batches(true).unwrap();
        assert_eq!(
            encoder.one_call_batches().is_ok(),
            precision != Precision::Int8Dynamic,
            "{precision}"
        );
        encoder.set_workers(2);
        let pixels = images(&encoder, 5);
        let want = singles(&encoder, &pixels);
        let mut out = vec![f32::NAN; 5 * encoder.dim()];
        encoder.encode_batch_into(&pixels, &mut out).unwrap();
        let worst = want
            .iter()
            .zip(&out)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = want.iter().fold(0f32, |m, a| m.max(a.abs()));
        let tolerance = match precision {
            Precision::Fp32 => 4.0 * f32::EPSILON * scale,
            _ => 0.0,
        };
        assert!(
            worst <= tolerance,
            "{precision}: largest difference {worst} (largest component {scale})"
        );
    }
}
