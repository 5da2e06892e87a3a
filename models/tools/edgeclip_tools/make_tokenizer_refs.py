#!/usr/bin/env python3
"""Write the tokenizer reference file the Rust CLIP BPE tokenizer is tested against.

    python3 -m edgeclip_tools.make_tokenizer_refs            # writes tests/data/tokenizer/
    python3 -m edgeclip_tools.make_tokenizer_refs --out DIR  # somewhere else

Outputs (all deterministic: hand-written cases plus cases generated with a fixed seed):

- `open_clip_reference.jsonl`: one JSON object per line, `{"text": ..., "ids": [...]}`, where
  `ids` is `open_clip.tokenize([text], context_length=77)[0]` with the trailing zero padding
  removed. Every row therefore starts with 49406 (<start_of_text>) and ends with 49407
  (<end_of_text>); rows longer than 77 tokens were truncated by open_clip to 77 with the last id
  forced to 49407.
- `open_clip_cleaned.jsonl`: `{"text": ..., "clean": ...}`, the text after open_clip's cleaning
  (what the BPE actually sees). Not needed by a test; it makes a failing row easy to debug.

It also copies open_clip's BPE merge list (`bpe_simple_vocab_16e6.txt.gz`, shipped inside the
open_clip package) to `src/prompts/` (use `--vocab-out` to change that, `--vocab-out ''` to skip),
so the Rust tokenizer can `include_bytes!` the very file the reference was made with.

open_clip's cleaning ("lower", the default for `open_clip.tokenize`) is:
    ftfy.fix_text(text) -> html.unescape(html.unescape(.)) -> strip -> " ".join(.split()) -> lower()
then the regex
    <start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+
(case-insensitive) splits it into words, each word is UTF-8 encoded, mapped through GPT-2's
bytes_to_unicode table and merged with the BPE ranks.
"""

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

import ftfy
import open_clip
from open_clip import tokenizer as oc_tokenizer

from .clip_common import REPO

CONTEXT_LENGTH = 77
SOT, EOT = 49406, 49407


# ---------------------------------------------------------------------------------------------
# Hand-written cases, grouped by what they exercise.
# ---------------------------------------------------------------------------------------------

PLAIN = [
    "a photo of a cat",
    "a photo of a dog",
    "an empty scene",
    "a red circle next to a blue square",
    "a person walking on the sidewalk",
    "a car parked in front of a house",
    "a delivery truck at the gate",
    "a package on the doorstep",
    "a fox in the garden at night",
    "a bird sitting on a bird feeder",
    "the door is open",
    "the door is closed",
    "a photo of a person",
    "a photo of a bicycle",
    "a blurry photo of a deer",
    "an empty parking lot",
    "a close-up photo of a coffee cup",
    "a rocket on the launch pad",
    "an astronaut in a white space suit",
    "a tabby cat lying on a wooden floor",
    "a",
    "photo",
    "cat",
    "supercalifragilisticexpialidocious",
    "antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "xqzjvkw",
    "the quick brown fox jumps over the lazy dog",
    "a photo of a {}.",
    "itap of a cat.",
    "a bad photo of the dog.",
    "a origami bird.",
    "a photo of the large car.",
]

UPPER = [
    "A PHOTO OF A CAT",
    "A Photo Of A Cat",
    "aN eMpTy ScEnE",
    "PERSON",
    "NASA ROCKET LAUNCH",
    "I'M HERE AND YOU'RE THERE",
    "DON'T STOP",
    "McDonald's",
    "iPhone",
    "CamelCaseWordsGlued",
    "ÀÉÎÕÜ",
    "ΑΒΓΔ ΕΖΗΘ",
    "ПРИВЕТ МИР",
    "İstanbul",
    "STRASSE STRAẞE",
]

ACCENTS = [
    "café",
    "naïve",
    "Ærøskøbing",
    "crème brûlée",
    "jalapeño",
    "São Paulo",
    "Zürich",
    "Łódź",
    "smörgåsbord",
    "façade",
    "résumé",
    "Ångström",
    "Dvořák",
    "Bjørn",
    "straße",
    "coöperate",
    "cafe\u0301 (decomposed accent)",
    "nai\u0308ve (decomposed diaeresis)",
    "A\u030angstro\u0308m",
    "ﬁne ﬂowers (ligatures)",
    "Ǆ ǅ ǆ",
    "Ĳsselmeer",
]

CJK = [
    "猫の写真",
    "一只猫的照片",
    "一隻貓的照片",
    "고양이 사진",
    "空のシーン",
    "ﾊﾝｶｸｶﾀｶﾅ",
    "ＦＵＬＬＷＩＤＴＨ ｌｅｔｔｅｒｓ １２３",
    "東京タワー at night",
    "北京 2008",
    "漢字かなカナ한글mixed",
    "日本語の文章、句読点。",
    "「引用」と『二重引用』",
]

OTHER_SCRIPTS = [
    "фотография кошки",
    "Пустая сцена",
    "Ёжик в тумане",
    "Україна, Київ",
    "صورة قطة",
    "مشهد فارغ",
    "السلام عليكم ورحمة الله",
    "שלום עולם",
    "नमस्ते दुनिया",
    "बिल्ली की तस्वीर",
    "สวัสดีครับ",
    "Γειά σου Κόσμε",
    "Բարեւ աշխարհ",
    "გამარჯობა",
    "ሰላም ልዑል",
    "வணக்கம்",
    "ສະບາຍດີ",
    "Xin chào thế giới",
    "Tiếng Việt có dấu",
]

EMOJI = [
    "a photo of a 🐈",
    "🐈",
    "🐕‍🦺",
    "👨‍👩‍👧‍👦",
    "👩‍💻 at work",
    "👍",
    "👍🏽",
    "👋🏿👋🏻",
    "🏳️‍🌈",
    "🇫🇷🇩🇪🇯🇵",
    "❤️",
    "❤",
    "☺️ smile",
    "🙂🙃😀😃😄",
    "🚗💨",
    "a cat 😺 and a dog 🐶",
    "🧑🏾‍🚀 astronaut",
    "1️⃣2️⃣3️⃣",
    "#️⃣",
    "emoji🎉glued🎊together",
]

PUNCT = [
    "!!!",
    "???",
    "?!?!",
    "...",
    "…",
    "---",
    "—",
    "–",
    "a--b",
    "hello, world!",
    "wait... what?!",
    "(parentheses) [brackets] {braces}",
    "<angle brackets>",
    "@user #hashtag $money %percent ^caret *star",
    "foo_bar-baz.qux",
    "path/to/file.jpg",
    "C:\\Windows\\System32",
    "https://example.com/a/b?c=d&e=f#g",
    "user@example.com",
    "~`!@#$%^&*()_+-={}[]|\\:;\"'<>,.?/",
    "!@#",
    "a.b.c.d",
    ":-) :-( ;-) :D",
    "¿Qué? ¡Sí!",
    "«guillemets» and ‹single›",
    "§ ¶ † ‡ • ° ± × ÷",
    "© ® ™",
    "€100 £50 ¥1000 ₹20",
    "=== *** ###",
    ".",
    ",",
    "'",
    "\"",
]

APOSTROPHES = [
    "it's a cat",
    "don't",
    "we're here",
    "they've gone",
    "i'm fine",
    "you'll see",
    "he'd know",
    "IT'S LOUD",
    "DON'T",
    "We'Re MiXeD",
    "the cat's toy",
    "cats' toys",
    "rock 'n' roll",
    "'quoted'",
    "o'clock",
    "y'all'd've",
    "'s",
    "'t",
    "'re",
    "'ve",
    "'m",
    "'ll",
    "'d",
    "'x",
    "it’s a cat (curly apostrophe)",
    "don’t",
    "“double curly quotes”",
    "‘single curly quotes’",
    "„German quotes“",
    "it`s a backtick",
    "it´s an acute accent",
    "it''s doubled",
    "'''",
]

DIGITS = [
    "0",
    "7",
    "42",
    "123",
    "2024",
    "3.14159",
    "1,000,000",
    "12345678901234567890",
    "9876543210987654321098765432109876543210",
    "00000000",
    "-17",
    "+1 (555) 123-4567",
    "1st 2nd 3rd 4th",
    "A4 paper, B52s, R2D2, C3PO",
    "1920x1080",
    "v1.2.3-rc.4",
    "0xDEADBEEF",
    "10:30 am",
    "2026-11-26T23:59:00Z",
    "٣٤٥ arabic-indic digits",
    "１２３ fullwidth digits",
    "½ ¾ ² ³",
    "Ⅻ roman numeral",
    "①②③",
]

WHITESPACE = [
    "",
    " ",
    "   ",
    "\t",
    "\n",
    "\r\n",
    "  leading spaces",
    "trailing spaces   ",
    "multiple    inner     spaces",
    "tab\tseparated\twords",
    "new\nline\nseparated",
    "windows\r\nline\r\nendings",
    " \t\n mixed \t \n whitespace \n\t ",
    "non\u00a0breaking\u00a0space",
    "em\u2003space and thin\u2009space",
    "ideographic\u3000space",
    "zero\u200bwidth\u200bspace",
    "line\u2028separator",
    "vertical\x0btab and form\x0cfeed",
    "soft\u00adhyphen",
    "word\u2060joiner",
]

HTML = [
    "&amp;",
    "&lt;",
    "&gt;",
    "&quot;quoted&quot;",
    "&#39;apostrophe&#39;",
    "Tom &amp; Jerry",
    "x &lt; y &gt; z",
    "&amp;amp;",
    "&amp;lt;b&amp;gt;",
    "&lt;b&gt;bold&lt;/b&gt;",
    "<b>real tags</b>",
    "&copy; 2024",
    "&eacute;t&eacute;",
    "&#233;t&#233;",
    "&#x1F408; hex entity cat",
    "&nbsp;nbsp",
    "&notanentity;",
    "AT&T",
    "R&D",
    "fish & chips",
    "&",
    "&&&",
    # ftfy unescapes HTML itself, but only when the text contains no "<"; open_clip then unescapes
    # twice more. So three levels of escaping collapse here ...
    "&amp;amp;amp;",
    # ... and only two here.
    "<b> &amp;amp;amp;",
]

FTFY = [
    # Mojibake and other things ftfy.fix_text repairs before tokenization.
    "cafÃ©",
    "naÃ¯ve",
    "The Mona Lisa doesnâ€™t have eyebrows.",
    "\x1b[31mred terminal text\x1b[0m",
    "bell\x07char",
    "null\x00char",
    "C1 control\x85next",
    "info separators\x1c\x1d\x1e\x1fare removed by ftfy (not split on)",
]

SPECIAL = [
    "<start_of_text>",
    "<end_of_text>",
    "a <end_of_text> in the middle",
    "<START_OF_TEXT> upper case",
    "<|endoftext|>",
    "</w>",
    "a</w>b",
]

COMBINATIONS = [
    "A PHOTO of a café in Zürich 🇨🇭 at 10:30 &amp; it's raining!!!",
    "  Ærøskøbing\t—  the cat’s   🐈‍⬛  home   ",
    "东京 Tokyo Токио طوكيو 🗼 2020",
    "I'LL BE BACK... 1984 &lt;terminator&gt;",
    "naïve   café\n\n\nrésumé\t\t123",
    "👨‍👩‍👧 family of 3 at the beach 🏖️, 25°C",
    "don’t &quot;quote&quot; me 😉",
    "e-mail: test@example.com, tel: +49 (0)30 1234567",
]


def long_cases():
    """Strings far longer than 77 tokens: open_clip truncates to 77 and forces the last id to EOT."""
    base = "a photo of a cat sitting on a red chair next to a blue window "
    return [
        base * 10,
        " ".join(str(i) for i in range(200)),
        "🐈" * 100,
        "word " * 76,  # 76 words + SOT + EOT = 78 tokens: just over the limit
        "word " * 75,  # exactly 77 tokens: fits, no truncation
        "word " * 74,  # 76 tokens
        "x" * 1000,
        "!" * 500,
        "Ærøskøbing " * 40,
        ("The quick brown fox jumps over the lazy dog. " * 12).upper(),
        "猫" * 200,
        "&amp; " * 100,
        "it's " * 60,
        "a\tb\nc " * 50,
    ]


def generated_cases(seed: int, count: int):
    """Random strings assembled from the categories above and random code points (fixed seed)."""
    rng = random.Random(seed)
    words = [w for group in (PLAIN, UPPER, ACCENTS, CJK, OTHER_SCRIPTS, EMOJI, PUNCT, APOSTROPHES,
                             DIGITS, HTML) for w in group if w]
    separators = [" ", "  ", "\t", "\n", "", ", ", " - ", "\u00a0", "... "]
    # Code point ranges to sample single characters from: ASCII, Latin-1, Latin Extended, Greek,
    # Cyrillic, Arabic, Devanagari, CJK, Hangul, emoji, general punctuation, combining marks.
    ranges = [(0x20, 0x7E), (0xA1, 0xFF), (0x100, 0x17F), (0x391, 0x3C9), (0x410, 0x44F),
              (0x621, 0x64A), (0x905, 0x939), (0x4E00, 0x4FFF), (0xAC00, 0xAD00),
              (0x1F600, 0x1F64F), (0x2010, 0x2027), (0x300, 0x36F)]
    out = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            # A few phrases glued with random separators, random case changes.
            parts = [rng.choice(words) for _ in range(rng.randint(2, 6))]
            s = "".join(p + rng.choice(separators) for p in parts)
            if rng.random() < 0.3:
                s = s.upper()
            elif rng.random() < 0.3:
                s = s.title()
        elif kind == 1:
            # Random characters from mixed scripts.
            chars = []
            for _ in range(rng.randint(1, 30)):
                lo, hi = rng.choice(ranges)
                chars.append(chr(rng.randint(lo, hi)))
            s = "".join(chars)
        else:
            # Random printable ASCII, including quotes, apostrophe suffixes and digits.
            alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 '\".,!?-&;#\t"
            s = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60)))
            if rng.random() < 0.3:
                s += rng.choice(["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"])
        out.append(s)
    return out


def jsonl(obj) -> str:
    """One JSON line, UTF-8 kept readable, but with the code points that some line splitters treat
    as line breaks (U+0085, U+2028, U+2029) escaped so every record is exactly one line."""
    line = json.dumps(obj, ensure_ascii=False)
    for ch in ("\x85", "\u2028", "\u2029"):
        line = line.replace(ch, "\\u%04x" % ord(ch))
    return line + "\n"


def all_cases(seed: int, generated: int):
    cases = (PLAIN + UPPER + ACCENTS + CJK + OTHER_SCRIPTS + EMOJI + PUNCT + APOSTROPHES + DIGITS
             + WHITESPACE + HTML + FTFY + SPECIAL + COMBINATIONS + long_cases()
             + generated_cases(seed, generated))
    # Drop exact duplicates, keep the first occurrence (stable order).
    seen, unique = set(), []
    for c in cases:
        if c not in seen:
            seen.add(c)
            unique.append(c)
    return unique


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "tests/data/tokenizer")
    ap.add_argument("--vocab-out", default=str(REPO / "src/prompts/bpe_simple_vocab_16e6.txt.gz"),
                    help="where to copy open_clip's BPE vocabulary ('' to skip)")
    ap.add_argument("--seed", type=int, default=20241126)
    ap.add_argument("--generated", type=int, default=120, help="number of random strings")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    cases = all_cases(args.seed, args.generated)

    n_truncated = 0
    with open(args.out / "open_clip_reference.jsonl", "w", encoding="utf-8") as ref, \
         open(args.out / "open_clip_cleaned.jsonl", "w", encoding="utf-8") as cleaned:
        for text in cases:
            row = open_clip.tokenize([text], context_length=CONTEXT_LENGTH)[0].tolist()
            # Remove the trailing zero padding. The last real id is always EOT (49407), so zeros
            # that are real tokens ("!" is id 0) are never removed.
            while row and row[-1] == 0:
                row.pop()
            assert row[0] == SOT and row[-1] == EOT, (text, row)
            full_len = len(oc_tokenizer._tokenizer.encode(text)) + 2
            n_truncated += full_len > CONTEXT_LENGTH
            ref.write(jsonl({"text": text, "ids": row}))
            clean = oc_tokenizer._clean_lower(text)
            cleaned.write(jsonl({"text": text, "clean": clean}))

    print(f"wrote {len(cases)} rows ({n_truncated} truncated to {CONTEXT_LENGTH}) to {args.out}")
    print(f"open_clip {open_clip.__version__}, ftfy {ftfy.__version__}")

    if args.vocab_out:
        src = Path(oc_tokenizer.default_bpe())
        dst = Path(args.vocab_out)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        print(f"copied {src} -> {dst} ({dst.stat().st_size} bytes)")


if __name__ == "__main__":
    sys.exit(main())
