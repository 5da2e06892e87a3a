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
//! like "cafÃ©"). Everything else ftfy does by default to ordinary text (NFC normalisation,
//! curly quotes, ligatures, full-width forms, control characters) is done here.

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
        f.debug_struct("ClipTokenizer").field("vocab", &self.encoder.len()).finish()
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
        let encoder = vocab.into_iter().enumerate().map(|(i, t)| (t, i as i64)).collect();
        let ranks = merges.into_iter().enumerate().map(|(i, m)| (m, i)).collect();
        let pattern = Regex::new(
            r"(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
        )
        .expect("CLIP's pattern compiles");
        ClipTokenizer { encoder, ranks, byte_encoder, pattern, cache: Default::default() }
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
                .filter_map(|p| self.ranks.get(&(p[0].clone(), p[1].clone())).map(|&r| (r, p[0].clone(), p[1].clone())))
                .min_by_key(|(r, _, _)| *r);
            let Some((_, first, second)) = best else { break };
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
            let mapped: String = m.as_str().bytes().map(|b| self.byte_encoder[b as usize]).collect();
            if let Some(hit) = self.cache.lock().ok().and_then(|c| c.get(&mapped).cloned()) {
                ids.extend(hit);
                continue;
            }
            let piece: Vec<i64> = self
                .bpe(&mapped)
                .iter()
                .map(|s| *self.encoder.get(s).expect("BPE symbols are in the vocabulary"))
                .collect();
            if let Ok(mut c) = self.cache.lock() {
                if c.len() < 10_000 {
                    c.insert(mapped, piece.clone());
                }
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
    let unescaped = html_escape::decode_html_entities(&html_escape::decode_html_entities(&fixed).into_owned()).into_owned();
    let collapsed = unescaped.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.to_lowercase()
}

/// The parts of `ftfy.fix_text` that touch ordinary text.
fn fix_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            // uncurl_quotes
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => out.push('\''),
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => out.push('"'),
            // fix_latin_ligatures
            '\u{FB00}' => out.push_str("ff"),
            '\u{FB01}' => out.push_str("fi"),
            '\u{FB02}' => out.push_str("fl"),
            '\u{FB03}' => out.push_str("ffi"),
            '\u{FB04}' => out.push_str("ffl"),
            '\u{FB05}' | '\u{FB06}' => out.push_str("st"),
            '\u{0132}' => out.push_str("IJ"),
            '\u{0133}' => out.push_str("ij"),
            // fix_character_width: full-width ASCII and the ideographic space
            '\u{FF01}'..='\u{FF5E}' => out.push(char::from_u32(c as u32 - 0xFF01 + 0x21).expect("ASCII")),
            '\u{3000}' => out.push(' '),
            // fix_line_breaks
            '\r' | '\u{2028}' | '\u{2029}' | '\u{0085}' => out.push('\n'),
            // remove_control_chars (keeps tab and newline)
            '\u{0000}'..='\u{0008}' | '\u{000B}' | '\u{000E}'..='\u{001F}' | '\u{007F}' => {}
            '\u{200B}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}' => {}
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
        assert_eq!(clean("  A  Photo\tof\n\n&amp;  “Cats” "), "a photo of & \"cats\"");
        assert_eq!(clean("ｆｕｌｌ"), "full");
    }
}
