//! The model bundle: `bundle.toml` and the files it names (see `models/BUNDLE.md`).
//!
//! Loading a bundle only reads and checks its manifest and files; running the towers is the
//! encoders' job ([`super::encoder`]). Everything that can be wrong with a bundle is reported
//! here, with the file it is wrong in, before any graph is built.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ModelError;
use super::options::Precision;
use crate::preprocess::{ChannelOrder, CropMode, Interpolation, ResizeMode, Spec};

/// The tokenizer a text tower was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum TokenizerKind {
    /// CLIP's byte-level BPE with 49408 tokens (OpenAI CLIP, OpenCLIP, MobileCLIP, TinyCLIP).
    #[serde(rename = "clip-bpe")]
    ClipBpe,
}

/// Another precision of the same tower, in its own file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// The ONNX file, relative to the bundle folder.
    pub onnx: PathBuf,
    /// Its precision.
    pub precision: Precision,
}

/// `[image]`: the image tower and how frames are prepared for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageTower {
    /// The default ONNX file.
    pub onnx: PathBuf,
    /// The default file's precision.
    pub precision: Precision,
    /// Input tensor name.
    pub input: String,
    /// Output tensor name.
    pub output: String,
    /// Input height in pixels.
    pub height: u32,
    /// Input width in pixels.
    pub width: u32,
    /// Resize mode.
    pub resize: ResizeMode,
    /// Crop mode.
    pub crop: CropMode,
    /// Resampling filter.
    pub interpolation: Interpolation,
    /// Per-channel mean, in the model's channel order, on a 0..1 scale.
    pub mean: [f32; 3],
    /// Per-channel standard deviation.
    pub std: [f32; 3],
    /// Channel order.
    pub channel_order: ChannelOrder,
    /// Other precisions of this tower.
    #[serde(default)]
    pub variants: Vec<Variant>,
}

impl From<&ImageTower> for Spec {
    fn from(t: &ImageTower) -> Spec {
        Spec {
            height: t.height,
            width: t.width,
            resize: t.resize,
            interpolation: t.interpolation,
            mean: t.mean,
            std: t.std,
            channel_order: t.channel_order,
        }
    }
}

/// `[text]`: the text tower.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextTower {
    /// The default ONNX file.
    pub onnx: PathBuf,
    /// The default file's precision.
    pub precision: Precision,
    /// Input tensor name (token ids, int64 `[N, context_length]`).
    pub input: String,
    /// Output tensor name.
    pub output: String,
    /// Tokenizer.
    pub tokenizer: TokenizerKind,
    /// Number of tokens per text, padding included.
    pub context_length: usize,
    /// Other precisions of this tower.
    #[serde(default)]
    pub variants: Vec<Variant>,
}

/// `[prompts]` and `[vocabulary]`: embeddings files shipped with the bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsRef {
    /// The safetensors file, relative to the bundle folder.
    pub file: PathBuf,
}

/// `bundle.toml`, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Free-text name.
    pub name: String,
    /// Embedding width D.
    pub embed_dim: usize,
    /// Softmax scale applied to cosine scores.
    pub logit_scale: f32,
    /// Identifies the embedding space (see `models/BUNDLE.md`).
    pub fingerprint: String,
    /// The image tower.
    pub image: ImageTower,
    /// The text tower, if shipped.
    pub text: Option<TextTower>,
    /// Precomputed prompt embeddings, if shipped.
    pub prompts: Option<PromptsRef>,
    /// The vocabulary: embeddings of many everyday things a camera sees, the competitors of
    /// open-set scoring (same file format as `prompts`).
    pub vocabulary: Option<PromptsRef>,
}

/// A bundle whose manifest parsed, whose files exist and whose fingerprint matches.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    /// The parsed manifest.
    pub manifest: Manifest,
}

/// The name of the manifest inside a bundle folder.
pub const MANIFEST: &str = "bundle.toml";

impl Bundle {
    /// Reads and checks the bundle in `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Bundle, ModelError> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|error| ModelError::Io {
            path: path.clone(),
            error,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|e| ModelError::Manifest {
            path: path.clone(),
            message: e.message().to_string(),
            line: e.span().map(|s| text[..s.start].lines().count().max(1)),
        })?;
        let bundle = Bundle { dir, manifest };
        bundle.check()?;
        Ok(bundle)
    }

    /// The bundle folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest's path (for error messages).
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    /// The bundle's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Embedding width.
    pub fn embed_dim(&self) -> usize {
        self.manifest.embed_dim
    }

    /// The fingerprint of the embedding space.
    pub fn fingerprint(&self) -> &str {
        &self.manifest.fingerprint
    }

    /// Path of a file named in the manifest.
    pub fn file(&self, relative: &Path) -> PathBuf {
        self.dir.join(relative)
    }

    /// The image tower's ONNX file at the given precision (the default one when `None`).
    pub fn image_onnx(
        &self,
        precision: Option<Precision>,
    ) -> Result<(PathBuf, Precision), ModelError> {
        let t = &self.manifest.image;
        self.pick(&t.onnx, t.precision, &t.variants, precision, "image")
    }

    /// The text tower's ONNX file at the given precision (the default one when `None`).
    pub fn text_onnx(
        &self,
        precision: Option<Precision>,
    ) -> Result<(PathBuf, Precision), ModelError> {
        let t = self
            .manifest
            .text
            .as_ref()
            .ok_or_else(|| ModelError::NoTextTower {
                path: self.manifest_path(),
            })?;
        self.pick(&t.onnx, t.precision, &t.variants, precision, "text")
    }

    /// Every precision the image tower is shipped in, the default first.
    pub fn image_precisions(&self) -> Vec<Precision> {
        let t = &self.manifest.image;
        std::iter::once(t.precision)
            .chain(t.variants.iter().map(|v| v.precision))
            .collect()
    }

    fn pick(
        &self,
        default: &Path,
        default_precision: Precision,
        variants: &[Variant],
        wanted: Option<Precision>,
        tower: &'static str,
    ) -> Result<(PathBuf, Precision), ModelError> {
        match wanted {
            None => Ok((self.file(default), default_precision)),
            Some(p) if p == default_precision => Ok((self.file(default), p)),
            Some(p) => variants
                .iter()
                .find(|v| v.precision == p)
                .map(|v| (self.file(&v.onnx), p))
                .ok_or_else(|| ModelError::NoVariant {
                    path: self.manifest_path(),
                    tower,
                    precision: p,
                }),
        }
    }

    /// The shipped vocabulary file, if any.
    pub fn vocabulary_file(&self) -> Option<PathBuf> {
        self.manifest
            .vocabulary
            .as_ref()
            .map(|p| self.file(&p.file))
    }

    /// The shipped prompt embeddings file, if any.
    pub fn prompts_file(&self) -> Option<PathBuf> {
        self.manifest.prompts.as_ref().map(|p| self.file(&p.file))
    }

    fn check(&self) -> Result<(), ModelError> {
        let m = &self.manifest;
        let path = self.manifest_path();
        let invalid = |key: &str, message: String| ModelError::Invalid {
            path: path.clone(),
            key: key.to_string(),
            message,
        };
        if m.embed_dim == 0 {
            return Err(invalid("embed_dim", "must be at least 1".into()));
        }
        if !(m.logit_scale.is_finite() && m.logit_scale > 0.0) {
            return Err(invalid(
                "logit_scale",
                format!("must be a positive number, got {}", m.logit_scale),
            ));
        }
        let img = &m.image;
        if img.height == 0 || img.width == 0 || img.height > 4096 || img.width > 4096 {
            return Err(invalid(
                "image.height/width",
                format!(
                    "must be between 1 and 4096, got {}x{}",
                    img.width, img.height
                ),
            ));
        }
        if img.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(invalid(
                "image.std",
                format!("every entry must be positive, got {:?}", img.std),
            ));
        }
        if img.mean.iter().any(|s| !s.is_finite()) {
            return Err(invalid(
                "image.mean",
                format!("every entry must be a number, got {:?}", img.mean),
            ));
        }
        if let Some(t) = &m.text
            && !(2..=1024).contains(&t.context_length)
        {
            return Err(invalid(
                "text.context_length",
                format!("must be between 2 and 1024, got {}", t.context_length),
            ));
        }
        // Every file named must exist.
        let mut files: Vec<(&str, &Path)> = vec![("image.onnx", &img.onnx)];
        files.extend(
            img.variants
                .iter()
                .map(|v| ("image.variants.onnx", v.onnx.as_path())),
        );
        if let Some(t) = &m.text {
            files.push(("text.onnx", &t.onnx));
            files.extend(
                t.variants
                    .iter()
                    .map(|v| ("text.variants.onnx", v.onnx.as_path())),
            );
        }
        if let Some(p) = &m.prompts {
            files.push(("prompts.file", &p.file));
        }
        if let Some(p) = &m.vocabulary {
            files.push(("vocabulary.file", &p.file));
        }
        for (key, rel) in files {
            let full = self.file(rel);
            if !full.is_file() {
                return Err(invalid(key, format!("{} does not exist", full.display())));
            }
        }
        // The fingerprint ties prompt embeddings to the weights that made them.
        let fp_file = match &m.text {
            Some(t) => self.file(&t.onnx),
            None => self.file(&img.onnx),
        };
        let actual = fingerprint_remembered(&fp_file)?;
        if actual != m.fingerprint {
            return Err(ModelError::Fingerprint {
                path,
                file: fp_file,
                expected: m.fingerprint.clone(),
                actual,
            });
        }
        Ok(())
    }
}

/// The first 16 hex digits of a file's SHA-256: how bundles name their embedding space.
///
/// Streamed through the hash: a real CLIP's text tower is hundreds of MB, which should not sit in
/// memory twice at start-up (once here, once in tract).
pub fn fingerprint_of(path: &Path) -> Result<String, ModelError> {
    let io_err = |error| ModelError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut file = std::fs::File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io_err)?;
    Ok(hex16(&hasher.finalize()))
}

/// The first 16 hex digits of a digest.
pub(crate) fn hex16(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// "size mtime" of a file (nanoseconds since the epoch): what the start-up caches compare to
/// tell whether a file changed. `None` when the metadata cannot be read.
pub(crate) fn file_stamp(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!("{} {}", meta.len(), mtime.as_nanos()))
}

/// A cache file name for `path` (canonicalised) and `extra`: 16 hex digits of their SHA-256.
pub(crate) fn cache_key(path: &Path, extra: &str) -> Option<String> {
    let full = std::fs::canonicalize(path).ok()?;
    let mut key = Sha256::new();
    key.update(full.as_os_str().as_encoded_bytes());
    key.update(extra.as_bytes());
    Some(hex16(&key.finalize()))
}

/// [`fingerprint_of`], remembered between starts.
///
/// Hashing is most of what opening a bundle costs: 351 MB for a ViT-B/32 image tower without a
/// text tower, hundreds of MB for a real CLIP's text tower, seconds on a Raspberry Pi. The digest
/// is kept in the cache folder ([`crate::paths::cache_dir`], `fingerprints/`) with the file's
/// size and modification time, and reused while both are unchanged (as `make` trusts
/// timestamps); replacing or editing the file hashes it again. Without a usable cache folder the
/// file is hashed every time.
pub fn fingerprint_remembered(path: &Path) -> Result<String, ModelError> {
    fingerprint_remembered_in(path, crate::paths::cache_dir().as_deref())
}

/// [`fingerprint_remembered`] with the cache folder given.
fn fingerprint_remembered_in(path: &Path, cache: Option<&Path>) -> Result<String, ModelError> {
    let stamp = file_stamp(path);
    let memo = stamp
        .as_ref()
        .and_then(|_| Some(cache?.join("fingerprints").join(cache_key(path, "")?)));
    if let (Some(stamp), Some(memo)) = (&stamp, &memo)
        && let Ok(text) = std::fs::read_to_string(memo)
        && let Some((seen, digest)) = text.trim_end().rsplit_once(' ')
        && seen == stamp
    {
        return Ok(digest.to_string());
    }
    let digest = fingerprint_of(path)?;
    if let (Some(stamp), Some(memo)) = (stamp, memo) {
        // A cache that cannot be written only costs the next start a hash.
        let tmp = memo.with_extension(format!("tmp{}", std::process::id()));
        let written = memo
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&tmp, format!("{stamp} {digest}\n")))
            .and_then(|_| std::fs::rename(&tmp, &memo));
        if let Err(e) = written {
            log::debug!("not remembering the fingerprint of {}: {e}", path.display());
        }
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_fingerprints_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let file = dir.path().join("weights.onnx");
        let remembered = |f: &Path| fingerprint_remembered_in(f, Some(&cache)).unwrap();
        std::fs::write(&file, b"first weights").unwrap();
        let first = fingerprint_of(&file).unwrap();
        assert_eq!(remembered(&file), first);

        // The next call reads the memo instead of hashing: a doctored digest comes back.
        let memos: Vec<_> = std::fs::read_dir(cache.join("fingerprints"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(memos.len(), 1, "{memos:?}");
        let text = std::fs::read_to_string(&memos[0]).unwrap();
        assert!(text.ends_with(&format!(" {first}\n")), "{text:?}");
        std::fs::write(&memos[0], text.replace(&first, "0123456789abcdef")).unwrap();
        assert_eq!(remembered(&file), "0123456789abcdef");

        // Same size, other bytes, another modification time: hashed again.
        let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        std::io::Write::write_all(&mut f, b"other weights").unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
            .unwrap();
        drop(f);
        let second = fingerprint_of(&file).unwrap();
        assert_ne!(second, first);
        assert_eq!(remembered(&file), second);

        // Without a cache folder, or with one that cannot be written, the file is hashed.
        assert_eq!(fingerprint_remembered_in(&file, None).unwrap(), second);
        let blocked = dir.path().join("not-a-folder");
        std::fs::write(&blocked, b"").unwrap();
        assert_eq!(
            fingerprint_remembered_in(&file, Some(&blocked)).unwrap(),
            second
        );
    }
}
