//! Our CLIP tokenizer against open_clip's on 400+ strings (`tests/data/tokenizer/`, made by
//! `models/tools/make_tokenizer_refs.py`): unicode, accents, emoji, punctuation, digits, runs of
//! whitespace, HTML entities, strings longer than the context.

mod common;

use edgeclip::prompts::ClipTokenizer;

#[derive(serde::Deserialize)]
struct Row {
    text: String,
    ids: Vec<i64>,
}

#[test]
fn ids_identical_to_open_clip() {
    let text = std::fs::read_to_string(common::data("tokenizer/open_clip_reference.jsonl")).unwrap();
    let rows: Vec<Row> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(rows.len() >= 300, "only {} reference strings", rows.len());
    let tok = ClipTokenizer::shared();
    let mut failures = Vec::new();
    for row in &rows {
        let mut ours = tok.tokenize(&row.text, 77);
        while ours.last() == Some(&0) {
            ours.pop();
        }
        if ours != row.ids {
            failures.push(format!("{:?}\n  open_clip {:?}\n  ours      {:?}", row.text, row.ids, ours));
        }
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), rows.len(), failures.join("\n"));
}
