//! Criterion benches of each pipeline stage on one core.
//!
//! Measured: decoding a 640x480 JPEG frame from the bundled clip; MJPEG, RGB and YUYV 640x480
//! frames to the demo's input tensor (its bundle's size) and to a 224x224 one (ViT-B/32's input); the demo bundle's image tower
//! (int8 default and fp32 variant) and text tower; the full-size ViT-B/32 image tower (fp32 and
//! int8) when `models/tools/edgeclip_tools/make_vitb32.py` has generated it; matching one
//! embedding against 10, 100 and 1000 prompts; a trigger bank update. Set-up (model load, decoding inputs) is outside the timed loops.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use edgeclip::frame::{Frame, PixelFormat};
use edgeclip::matcher::{Label, LabelExtras, Matcher, OpenSet, Scores, Storage};
use edgeclip::model::{Bundle, ImageEncoder, Precision, TextEncoder};
use edgeclip::preprocess::{Preprocessor, Spec, decode_image};
use edgeclip::prompts::ClipTokenizer;
use edgeclip::trigger::{FrameStamp, LabelScore, LabelSpec, Metric, TriggerBank, TriggerParams};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn clip_jpeg() -> Vec<u8> {
    std::fs::read(root().join("tests/data/clip/frame_0000.jpg")).expect("the bundled clip")
}

fn frame(data: Vec<u8>, format: PixelFormat) -> Frame {
    Frame {
        data,
        width: 640,
        height: 480,
        format,
        seq: 0,
        captured_at: Instant::now(),
        captured_wall: SystemTime::now(),
    }
}

fn preprocessing(c: &mut Criterion) {
    let bundle = Bundle::load(root().join("models/demo")).unwrap();
    let spec = Spec::from(&bundle.manifest.image);
    let jpeg = clip_jpeg();
    let rgb = decode_image(&jpeg, "clip").unwrap();
    assert_eq!((rgb.width, rgb.height), (640, 480));
    let mut pre = Preprocessor::new(spec.clone());
    let mut out = vec![0f32; pre.output_len()];

    c.bench_function("jpeg_decode_640x480", |b| {
        b.iter(|| decode_image(black_box(&jpeg), "clip").unwrap())
    });

    let mjpeg = frame(jpeg.clone(), PixelFormat::Mjpeg);
    c.bench_function("mjpeg_frame_to_tensor_640x480", |b| {
        b.iter(|| pre.frame_to_tensor(black_box(&mjpeg), &mut out).unwrap())
    });

    let rgb_frame = frame(rgb.data.clone(), PixelFormat::Rgb24);
    c.bench_function("rgb_frame_to_tensor_640x480", |b| {
        b.iter(|| {
            pre.frame_to_tensor(black_box(&rgb_frame), &mut out)
                .unwrap()
        })
    });

    // YUYV: the same picture, converted to 4:2:2 once here.
    let mut yuyv = Vec::with_capacity(640 * 480 * 2);
    for px in rgb.data.chunks_exact(6) {
        let y = |r: u8, g: u8, b: u8| {
            (16.0 + 0.257 * r as f32 + 0.504 * g as f32 + 0.098 * b as f32) as u8
        };
        let (r, g, b) = (px[0] as f32, px[1] as f32, px[2] as f32);
        let u = (128.0 - 0.148 * r - 0.291 * g + 0.439 * b) as u8;
        let v = (128.0 + 0.439 * r - 0.368 * g - 0.071 * b) as u8;
        yuyv.extend_from_slice(&[y(px[0], px[1], px[2]), u, y(px[3], px[4], px[5]), v]);
    }
    let yuyv_frame = frame(yuyv, PixelFormat::Yuyv);
    c.bench_function("yuyv_frame_to_tensor_640x480", |b| {
        b.iter(|| {
            pre.frame_to_tensor(black_box(&yuyv_frame), &mut out)
                .unwrap()
        })
    });

    // The same frames to a 224x224 tensor: the input of CLIP ViT-B/32 and most real CLIPs.
    let mut pre224 = Preprocessor::new(Spec {
        height: 224,
        width: 224,
        ..spec
    });
    let mut out224 = vec![0f32; pre224.output_len()];
    for (name, f) in [
        ("mjpeg_frame_to_tensor_640x480_to_224", &mjpeg),
        ("rgb_frame_to_tensor_640x480_to_224", &rgb_frame),
        ("yuyv_frame_to_tensor_640x480_to_224", &yuyv_frame),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| pre224.frame_to_tensor(black_box(f), &mut out224).unwrap())
        });
    }
}

fn towers(c: &mut Criterion) {
    edgeclip::model::set_threads(1);
    let bundle = Bundle::load(root().join("models/demo")).unwrap();
    let mut group = c.benchmark_group("demo_image_tower");
    group.measurement_time(Duration::from_secs(5));
    // fp16 is the GPU's file: tract has no native half-float arithmetic on CPUs (5.2 s a frame
    // here, `benches/compare_ort.py` reports it), and the CPU path never runs it.
    let cpu_files = |b: &Bundle| {
        b.image_precisions()
            .into_iter()
            .filter(|p| *p != Precision::Fp16)
            .collect::<Vec<_>>()
    };
    for precision in cpu_files(&bundle) {
        let enc = ImageEncoder::load(&bundle, Some(precision)).unwrap();
        let input = vec![0.1f32; enc.input_len()];
        let mut out = vec![0f32; enc.dim()];
        group.bench_function(BenchmarkId::from_parameter(precision), |b| {
            b.iter(|| enc.encode_into(black_box(&input), &mut out).unwrap())
        });
    }
    group.finish();
    // The full-size ViT-B/32 image tower, when models/tools/edgeclip_tools/make_vitb32.py has
    // generated it (350 MB: never committed). About 0.1 s a run, so ten samples.
    let vit = root().join("target/models/vit-b32");
    if vit.join("bundle.toml").exists() {
        let bundle = Bundle::load(&vit).unwrap();
        let mut group = c.benchmark_group("vit_b32_image_tower");
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(10));
        for precision in cpu_files(&bundle) {
            let enc = ImageEncoder::load(&bundle, Some(precision)).unwrap();
            let input = edgeclip::bench::test_pattern(enc.input_len());
            let mut out = vec![0f32; enc.dim()];
            group.bench_function(BenchmarkId::from_parameter(precision), |b| {
                b.iter(|| enc.encode_into(black_box(&input), &mut out).unwrap())
            });
        }
        group.finish();
    } else {
        eprintln!(
            "vit_b32_image_tower: skipped, {} not generated",
            vit.display()
        );
    }
    if bundle.manifest.text.is_some() {
        let text = TextEncoder::load(&bundle, None).unwrap();
        let ids =
            ClipTokenizer::shared().tokenize("a photo of a red circle", text.context_length());
        c.bench_function("demo_text_tower", |b| {
            b.iter(|| text.encode(black_box(&ids)).unwrap())
        });
    }
}

fn matching(c: &mut Criterion) {
    let dim = 512;
    let mut group = c.benchmark_group("match_prompts_d512");
    for n in [10usize, 100, 1000] {
        let entries = (0..n)
            .map(|i| {
                let e: Vec<f32> = (0..dim)
                    .map(|j| ((i * 31 + j * 7) % 97) as f32 - 48.0)
                    .collect();
                (
                    Label {
                        name: i.to_string(),
                        prompt: i.to_string(),
                        background: false,
                    },
                    vec![e],
                )
            })
            .collect();
        let m = Matcher::new(entries, dim, 100.0).unwrap();
        let image: Vec<f32> = (0..dim).map(|j| (j % 13) as f32 - 6.0).collect();
        let mut scores = Scores::default();
        // The storage Matcher::new picks (int8 above 512 prompts), and f32 for comparison.
        let mut variants = vec![(n.to_string(), m.clone())];
        if m.storage() == Storage::Int8 {
            variants.push((format!("{n}_f32"), m.with_storage(Storage::F32)));
        }
        for (id, m) in variants {
            group.bench_function(BenchmarkId::from_parameter(id), |b| {
                b.iter(|| m.score(black_box(&image), &mut scores))
            });
        }
    }
    group.finish();
}

/// Open-set scoring (issue 24) against the closed set it replaces, in one run: the demo bundle's
/// size (D=64, 4 labels and the background; its 44 vocabulary entries) and a real CLIP's (D=512,
/// 5 labels and the background; a 500-entry vocabulary, 2 negatives and 3 example images per
/// label). Embeddings are deterministic pseudo-random vectors.
fn open_set_matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("match_open_set");
    for (name, dim, labels, vocab, negatives, images) in
        [("demo", 64, 4, 44, 0, 0), ("clip", 512, 5, 500, 2, 3)]
    {
        let mut seed = 1u32;
        let mut vec = |dim: usize| -> Vec<f32> {
            (0..dim)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect()
        };
        let mut entries: Vec<(Label, Vec<Vec<f32>>)> = (0..=labels)
            .map(|i| {
                let label = Label {
                    name: format!("l{i}"),
                    prompt: format!("l{i}"),
                    background: i == labels,
                };
                (label, vec![vec(dim)])
            })
            .collect();
        let closed = Matcher::new(entries.clone(), dim, 100.0).unwrap();
        let open = OpenSet {
            vocabulary: (0..vocab).map(|i| (format!("v{i}"), vec(dim))).collect(),
            synonym_cosine: 0.9,
            extras: (0..labels)
                .map(|_| LabelExtras {
                    negatives: (0..negatives)
                        .map(|i| (format!("n{i}"), vec(dim)))
                        .collect(),
                    images: (0..images).map(|_| vec(dim)).collect(),
                    negative_images: vec![],
                })
                .collect(),
            exemplar_weight: 0.3,
            exemplar_sharpness: 5.5,
        };
        let open = Matcher::open_set(std::mem::take(&mut entries), open, dim, 100.0).unwrap();
        let image = vec(dim);
        let mut scores = Scores::default();
        for (id, m) in [("closed", &closed), ("open", &open)] {
            group.bench_function(BenchmarkId::from_parameter(format!("{name}_{id}")), |b| {
                b.iter(|| m.score(black_box(&image), &mut scores))
            });
        }
    }
    group.finish();
}

fn trigger(c: &mut Criterion) {
    let params = TriggerParams {
        threshold: 0.5,
        enter_frames: 3,
        exit_frames: 5,
        cooldown: Duration::from_secs(2),
    };
    let labels = (0..10)
        .map(|i| LabelSpec {
            label: format!("l{i}"),
            prompt: format!("p{i}"),
            params,
        })
        .collect();
    let mut bank = TriggerBank::new("cam0", Metric::Prob, labels);
    let mut n = 0u64;
    c.bench_function("trigger_bank_update_10_labels", |b| {
        b.iter(|| {
            n += 1;
            let scores: [LabelScore; 10] = std::array::from_fn(|i| LabelScore {
                label: i,
                score: 0.3,
                prob: if (n / 20 + i as u64).is_multiple_of(2) {
                    0.9
                } else {
                    0.1
                },
            });
            let stamp = FrameStamp {
                seq: n,
                wall: SystemTime::UNIX_EPOCH,
                now: Duration::from_millis(n * 66),
                latency_ms: 1.0,
            };
            black_box(bank.update(stamp, &scores))
        })
    });
}

criterion_group!(
    benches,
    preprocessing,
    towers,
    matching,
    open_set_matching,
    trigger
);
criterion_main!(benches);
