//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

/// `tests/data/...` as an absolute path.
pub fn data(rel: &str) -> PathBuf {
    root().join("tests/data").join(rel)
}

/// `config` with snapshots off: a daemon started by a test must not write into the user's
/// state folder (`~/.local/share/edgeclip`), nor depend on it existing.
pub fn without_snapshots(mut config: edgeclip::config::Config) -> edgeclip::config::Config {
    config.snapshots.enabled = false;
    config
}

/// The repository root: `$EDGECLIP_ROOT` when set (a test binary built on one machine and run in
/// a copy of the repository on another, as `benches/gpu/run.sh` does), else the folder it was
/// built from.
pub fn root() -> PathBuf {
    std::env::var_os("EDGECLIP_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf())
}

/// A reference tensors file, read once.
pub struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    pub fn open(path: &Path) -> Reference {
        Reference {
            bytes: std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        SafeTensors::deserialize(&self.bytes)
            .unwrap()
            .tensor(name)
            .is_ok()
    }

    /// A tensor as f32 (f32 stored) with its shape.
    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("tensor {name}: {e}"));
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
        let v = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (t.shape().to_vec(), v)
    }

    /// A tensor as i64.
    pub fn i64(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|e| panic!("tensor {name}: {e}"));
        assert_eq!(t.dtype(), safetensors::Dtype::I64, "{name}");
        let v = t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (t.shape().to_vec(), v)
    }
}

/// The image tower of the bundle in `bundle_dir` at `precision` on the images of `reference`
/// (its `pixel_values`, onnxruntime's inputs), one embedding each; with the reference file and
/// the embedding width.
pub fn image_embeddings(
    bundle_dir: &Path,
    reference: &Path,
    precision: edgeclip::model::Precision,
) -> (Reference, Vec<Vec<f32>>, usize) {
    let bundle = edgeclip::model::Bundle::load(bundle_dir).unwrap();
    let reference = Reference::open(reference);
    let (shape, pixels) = reference.f32("pixel_values");
    let encoder = edgeclip::model::ImageEncoder::load(&bundle, Some(precision)).unwrap();
    assert_eq!(encoder.precision(), precision);
    let per_image = shape[1..].iter().product::<usize>();
    let got = pixels
        .chunks_exact(per_image)
        .map(|image| encoder.encode(image).unwrap())
        .collect();
    (reference, got, bundle.embed_dim())
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    edgeclip::matcher::cosine(a, b)
}
