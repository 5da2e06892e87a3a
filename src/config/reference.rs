//! The configuration reference, generated from the reader: every key with its type, default and
//! meaning, as Markdown (`docs/CONFIG.md`) or as an annotated config with every key
//! (`edgeclip config-reference`).
//!
//! The reader ([`super::read`]) is the one place a key is written; running it in describe mode
//! on an empty file lists them all, so the reference cannot drift from what the daemon accepts
//! (and a test fails when the committed `docs/CONFIG.md` is not what this module writes).

use super::read::read_config;
use super::reader::{KeyDoc, Presence, Reader, TableKind};

/// Every table and key the reader asks for, in reading order.
pub fn keys() -> Vec<KeyDoc> {
    let mut r = Reader::describing();
    read_config(&mut r, toml::Table::new(), None);
    r.into_docs()
}

/// A table of the config and its keys.
struct Table<'a> {
    /// How a config writes its header: `camera`, `gpio.lines`.
    name: String,
    entry: &'a KeyDoc,
    keys: Vec<&'a KeyDoc>,
}

fn tables(docs: &[KeyDoc]) -> Vec<Table<'_>> {
    docs.iter()
        .filter_map(|d| {
            let kind = d.table?;
            let parent = d.section.trim_end_matches("[]");
            let name = if parent.is_empty() {
                d.key.clone()
            } else {
                format!("{parent}.{}", d.key)
            };
            let section = match kind {
                TableKind::Table => name.clone(),
                TableKind::Array => format!("{name}[]"),
            };
            let keys = docs
                .iter()
                .filter(|k| k.table.is_none() && k.section == section)
                .collect();
            Some(Table {
                name,
                entry: d,
                keys,
            })
        })
        .collect()
}

fn header(t: &Table) -> String {
    match t.entry.table {
        Some(TableKind::Array) => format!("[[{}]]", t.name),
        _ => format!("[{}]", t.name),
    }
}

fn presence_note(p: &Presence) -> &'static str {
    match p {
        Presence::Required => "Required.",
        Presence::Default(_) | Presence::Optional => "Optional.",
    }
}

/// The reference as Markdown: one section per table, one row per key.
pub fn markdown() -> String {
    let docs = keys();
    let mut out = String::from(
        "# Configuration reference\n\n\
         Every key of edgeclip's config file (`edgeclip run --config FILE`, \
         `edgeclip check-config FILE`), with its type, default and meaning. Generated from the \
         config reader (`src/config/read.rs`) by `edgeclip config-reference --markdown`; \
         `cargo test` fails when this file and the reader disagree, so do not edit it by hand. \
         `edgeclip config-reference` prints the same as an annotated config with every key.\n\n\
         Relative paths are resolved against the config file's folder. `check-config` reports \
         every problem at once, each with its key (`prompts[2].threshold`).\n",
    );
    for t in tables(&docs) {
        out.push_str(&format!(
            "\n## `{}`\n\n{} {}\n",
            header(&t),
            t.entry.doc,
            presence_note(&t.entry.presence)
        ));
        if t.keys.is_empty() {
            continue;
        }
        out.push_str("\n| key | type | default | meaning |\n|---|---|---|---|\n");
        for k in &t.keys {
            let default = match &k.presence {
                Presence::Required => "required".to_owned(),
                Presence::Default(v) => format!("`{v}`"),
                Presence::Optional => "not set".to_owned(),
            };
            out.push_str(&format!(
                "| `{}` | {} | {default} | {} |\n",
                k.key,
                k.kind.replace('|', "\\|"),
                k.doc.replace('|', "\\|")
            ));
        }
    }
    out
}

/// `text` as `#` comment lines of at most 99 characters.
fn comment(text: &str, out: &mut String) {
    let mut line = String::from("#");
    for word in text.split_whitespace() {
        if line.len() + 1 + word.len() > 99 && line.len() > 1 {
            out.push_str(&line);
            out.push('\n');
            line = String::from("#");
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// An annotated config with every key: defaults written out, required keys with an example, keys
/// without a default commented out with an example. It is itself a valid config.
pub fn annotated_toml() -> String {
    let docs = keys();
    let mut out = String::new();
    comment(
        "edgeclip configuration: every key, with its default. Generated from the config reader \
         (`edgeclip config-reference`; the same as a table: docs/CONFIG.md). Keys marked \
         \"Required\" must be given; commented-out keys are not set unless you set them. \
         Relative paths are resolved against this file's folder.",
        &mut out,
    );
    for t in tables(&docs) {
        out.push('\n');
        comment(
            &format!("{} {}", t.entry.doc, presence_note(&t.entry.presence)),
            &mut out,
        );
        // An optional list of tables (`[[cameras]]`, a camera's zones) is shown commented out,
        // its keys indented, so that the file stays valid and uncommenting `# key = value`
        // lines does not move them into it.
        let shown =
            !(t.entry.table == Some(TableKind::Array) && t.entry.presence == Presence::Optional);
        let lead = if shown { "" } else { "#   " };
        if shown {
            out.push_str(&header(&t));
        } else {
            out.push_str(&format!("# {}", header(&t)));
        }
        out.push('\n');
        for k in &t.keys {
            let (text, value, commented) = match &k.presence {
                Presence::Required => (
                    format!("{} Required.", k.doc),
                    k.example.unwrap_or("\"\"").to_owned(),
                    false,
                ),
                Presence::Default(v) => (k.doc.to_owned(), v.clone(), false),
                Presence::Optional => (
                    k.doc.to_owned(),
                    k.example.unwrap_or("\"\"").to_owned(),
                    true,
                ),
            };
            comment(&text, &mut out);
            let prefix = match (shown, commented) {
                (true, false) => "",
                (true, true) => "# ",
                (false, _) => lead,
            };
            out.push_str(&format!("{prefix}{} = {value}\n", k.key));
        }
    }
    out
}
