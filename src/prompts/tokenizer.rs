//! CLIP's byte-level BPE tokenizer, as open_clip's `SimpleTokenizer` runs it.
//!
//! Text is cleaned (HTML entities unescaped, a subset of ftfy's fixes, whitespace collapsed,
//! lower-cased), split with CLIP's regular expression, mapped byte by byte onto printable
//! characters, and merged with the 48894 BPE merges of `bpe_simple_vocab_16e6.txt.gz` (the file
//! OpenAI published with CLIP, shipped by open_clip). Output: `<start_of_text>`, the tokens,
//! `<end_of_text>`, zero padding to the context length; too-long texts are cut and end with
//! `<end_of_text>`.
//!
//! What is not reproduced: ftfy's mojibake repair (text that was decoded with the wrong codec,
//! like "cafÃ©"), and Python's `html.unescape` of the legacy entities written without a
//! semicolon ("&not" in "&notanentity;"). Everything else ftfy does by default to ordinary text
//! (NFC normalisation, curly quotes, ligatures, full- and half-width forms, C1 and other control
//! characters, terminal escapes, HTML entities) is done here.

use std::collections::HashMap;
use std::io::Read;
use std::sync::OnceLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// `<start_of_text>`.
pub const SOT: i64 = 49406;
/// `<end_of_text>`.
pub const EOT: i64 = 49407;
/// Vocabulary size.
pub const VOCAB_SIZE: usize = 49408;

static VOCAB_GZ: &[u8] = include_bytes!("bpe_simple_vocab_16e6.txt.gz");

/// The tokenizer's tables, built once per process from the embedded vocabulary (~50 ms).
pub struct ClipTokenizer {
    encoder: HashMap<String, i64>,
    ranks: HashMap<(String, String), usize>,
    byte_encoder: [char; 256],
    pattern: Regex,
    cache: std::sync::Mutex<HashMap<String, Vec<i64>>>,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab", &self.encoder.len())
            .finish()
    }
}

/// GPT-2's reversible map from bytes to printable characters.
fn bytes_to_unicode() -> [char; 256] {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        table[b as usize] = if printable.contains(&b) {
            char::from_u32(b).expect("latin-1 range")
        } else {
            extra += 1;
            char::from_u32(255 + extra).expect("small code point")
        };
    }
    table
}

impl ClipTokenizer {
    /// The process-wide tokenizer (tables are built on first use).
    pub fn shared() -> &'static ClipTokenizer {
        static TOKENIZER: OnceLock<ClipTokenizer> = OnceLock::new();
        TOKENIZER.get_or_init(ClipTokenizer::new)
    }

    fn new() -> ClipTokenizer {
        let mut text = String::new();
        flate2::read::GzDecoder::new(VOCAB_GZ)
            .read_to_string(&mut text)
            .expect("the embedded BPE vocabulary is valid gzip'd UTF-8");
        // Line 0 is a version header; open_clip keeps merges 1 .. 49152-256-2+1.
        let merges: Vec<(String, String)> = text
            .lines()
            .skip(1)
            .take(49152 - 256 - 2)
            .map(|l| {
                let (a, b) = l.split_once(' ').expect("a merge is two symbols");
                (a.to_string(), b.to_string())
            })
            .collect();
        let byte_encoder = bytes_to_unicode();
        // The vocabulary lists the byte symbols in GPT-2's order: printable bytes first (by
        // value), then the others. Their mapped code points sort the same way.
        let mut symbols: Vec<char> = byte_encoder.to_vec();
        symbols.sort_by_key(|&c| {
            let printable = (c as u32) < 256;
            (!printable, c as u32)
        });
        let mut vocab: Vec<String> = symbols.iter().map(|c| c.to_string()).collect();
        vocab.extend(symbols.iter().map(|c| format!("{c}</w>")));
        vocab.extend(merges.iter().map(|(a, b)| format!("{a}{b}")));
        vocab.push("<start_of_text>".into());
        vocab.push("<end_of_text>".into());
        assert_eq!(vocab.len(), VOCAB_SIZE);
        let encoder = vocab
            .into_iter()
            .enumerate()
            .map(|(i, t)| (t, i as i64))
            .collect();
        let ranks = merges
            .into_iter()
            .enumerate()
            .map(|(i, m)| (m, i))
            .collect();
        let pattern = Regex::new(
            r"(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )
        .expect("CLIP's pattern compiles");
        ClipTokenizer {
            encoder,
            ranks,
            byte_encoder,
            pattern,
            cache: Default::default(),
        }
    }

    /// Merges one pre-token (already byte-mapped) into BPE symbols.
    fn bpe(&self, token: &str) -> Vec<String> {
        let chars: Vec<char> = token.chars().collect();
        let mut word: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        if let Some(last) = word.last_mut() {
            last.push_str("</w>");
        } else {
            return word;
        }
        loop {
            let best = word
                .windows(2)
                .filter_map(|p| {
                    self.ranks
                        .get(&(p[0].clone(), p[1].clone()))
                        .map(|&r| (r, p[0].clone(), p[1].clone()))
                })
                .min_by_key(|(r, _, _)| *r);
            let Some((_, first, second)) = best else {
                break;
            };
            let mut merged = Vec::with_capacity(word.len());
            let mut i = 0;
            while i < word.len() {
                if i + 1 < word.len() && word[i] == first && word[i + 1] == second {
                    merged.push(format!("{first}{second}"));
                    i += 2;
                } else {
                    merged.push(word[i].clone());
                    i += 1;
                }
            }
            word = merged;
            if word.len() == 1 {
                break;
            }
        }
        word
    }

    /// Token ids of a text, without start/end tokens or padding.
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let cleaned = clean(text);
        let mut ids = Vec::new();
        for m in self.pattern.find_iter(&cleaned) {
            // open_clip's BPE cache maps the special tokens to themselves.
            match m.as_str() {
                "<start_of_text>" => {
                    ids.push(SOT);
                    continue;
                }
                "<end_of_text>" => {
                    ids.push(EOT);
                    continue;
                }
                _ => {}
            }
            let mapped: String = m
                .as_str()
                .bytes()
                .map(|b| self.byte_encoder[b as usize])
                .collect();
            if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(&mapped).cloned()) {
                ids.extend(hit);
                continue;
            }
            let piece: Vec<i64> = self
                .bpe(&mapped)
                .iter()
                .map(|s| {
                    *self
                        .encoder
                        .get(s)
                        .expect("BPE symbols are in the vocabulary")
                })
                .collect();
            if let Ok(mut c) = self.cache.lock()
                && c.len() < 10_000
            {
                c.insert(mapped, piece.clone());
            }
            ids.extend(piece);
        }
        ids
    }

    /// open_clip's `tokenize(text, context_length)`: start, tokens, end, zero padding; cut to
    /// `context_length` with the last id forced to the end token.
    pub fn tokenize(&self, text: &str, context_length: usize) -> Vec<i64> {
        let mut ids = Vec::with_capacity(context_length);
        ids.push(SOT);
        ids.extend(self.encode(text));
        ids.push(EOT);
        if ids.len() > context_length {
            ids.truncate(context_length);
            if let Some(last) = ids.last_mut() {
                *last = EOT;
            }
        }
        ids.resize(context_length, 0);
        ids
    }
}

/// open_clip's `whitespace_clean(basic_clean(text)).lower()`, with ftfy approximated.
pub fn clean(text: &str) -> String {
    let fixed = fix_text(text);
    let once = |t: &str| html_escape::decode_html_entities(t).into_owned();
    let unescaped = once(&once(&fixed));
    let collapsed = unescaped.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.to_lowercase()
}

/// ftfy's `fix_c1_controls`: C1 control characters are Windows-1252 bytes read as Latin-1.
fn fix_c1_control(c: char) -> char {
    const CP1252: [char; 32] = [
        '\u{20AC}', '\u{81}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{8D}',
        '\u{017D}', '\u{8F}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}', '\u{2022}',
        '\u{2013}', '\u{2014}', '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}', '\u{0153}',
        '\u{9D}', '\u{017E}', '\u{0178}',
    ];
    match c {
        '\u{80}'..='\u{9F}' => CP1252[c as usize - 0x80],
        c => c,
    }
}

/// ANSI terminal escapes (ftfy's `remove_terminal_escapes`).
fn ansi_escapes() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"\x1b\[[0-9;]*[a-zA-Z]").expect("valid pattern"))
}

/// The parts of `ftfy.fix_text` (ftfy 6) that touch ordinary text, in ftfy's order.
fn fix_text(text: &str) -> String {
    // unescape_html: ftfy unescapes entities itself unless the text looks like HTML.
    let text = if text.contains('<') {
        text.to_string()
    } else {
        html_escape::decode_html_entities(text).into_owned()
    };
    let text = ansi_escapes().replace_all(&text, "");
    let mut out = String::with_capacity(text.len());
    for c in text.chars().map(fix_c1_control) {
        match c {
            // fix_latin_ligatures
            '\u{FB00}' => out.push_str("ff"),
            '\u{FB01}' => out.push_str("fi"),
            '\u{FB02}' => out.push_str("fl"),
            '\u{FB03}' => out.push_str("ffi"),
            '\u{FB04}' => out.push_str("ffl"),
            '\u{FB05}' | '\u{FB06}' => out.push_str("st"),
            '\u{0132}' => out.push_str("IJ"),
            '\u{0133}' => out.push_str("ij"),
            '\u{0149}' => out.push_str("'n"),
            '\u{01C4}' => out.push_str("D\u{017D}"),
            '\u{01C5}' => out.push_str("D\u{017E}"),
            '\u{01C6}' => out.push_str("d\u{017E}"),
            '\u{01C7}' => out.push_str("LJ"),
            '\u{01C8}' => out.push_str("Lj"),
            '\u{01C9}' => out.push_str("lj"),
            '\u{01CA}' => out.push_str("NJ"),
            '\u{01CB}' => out.push_str("Nj"),
            '\u{01CC}' => out.push_str("nj"),
            '\u{01F1}' => out.push_str("DZ"),
            '\u{01F2}' => out.push_str("Dz"),
            '\u{01F3}' => out.push_str("dz"),
            // fix_character_width: full- and half-width forms to their NFKC forms, one by one
            '\u{FF01}'..='\u{FFEF}' => out.extend(std::iter::once(c).nfkc()),
            '\u{3000}' => out.push(' '),
            // uncurl_quotes
            '\u{02BC}' | '\u{2018}'..='\u{201B}' => out.push('\''),
            '\u{201C}'..='\u{201F}' => out.push('"'),
            // fix_line_breaks
            '\r' | '\u{2028}' | '\u{2029}' => out.push('\n'),
            // remove_control_chars (keeps tab and newline)
            '\u{0000}'..='\u{0008}' | '\u{000B}' | '\u{000E}'..='\u{001F}' | '\u{007F}' => {}
            '\u{FEFF}' | '\u{FFF9}'..='\u{FFFC}' | '\u{206A}'..='\u{206F}' => {}
            c => out.push(c),
        }
    }
    out.nfc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_ids() {
        let t = ClipTokenizer::shared();
        // open_clip.tokenize("a photo of a cat")
        let ids = t.tokenize("a photo of a cat", 77);
        assert_eq!(&ids[..7], &[49406, 320, 1125, 539, 320, 2368, 49407]);
        assert!(ids[7..].iter().all(|&i| i == 0));
    }

    #[test]
    fn truncation_keeps_the_end_token() {
        let t = ClipTokenizer::shared();
        let long = "cat ".repeat(200);
        let ids = t.tokenize(&long, 77);
        assert_eq!(ids.len(), 77);
        assert_eq!(ids[0], SOT);
        assert_eq!(ids[76], EOT);
        assert!(ids[1..76].iter().all(|&i| i == 2368));
    }

    #[test]
    fn cleaning() {
        assert_eq!(
            clean("  A  Photo\tof\n\n&amp;  “Cats” "),
            "a photo of & \"cats\""
        );
        assert_eq!(clean("ｆｕｌｌ"), "full");
    }
}
