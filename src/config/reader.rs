//! The machinery of the first pass: a [`Reader`] that walks a TOML table section by section
//! and is asked for each key by name, with its type, its default and what it means, in one call
//! ([`super::read`] makes those calls).
//!
//! That one call is the only place a key is written: the keys a section was asked for are its
//! allowed keys (whatever is left over is reported as unknown, all of it), the default is what
//! an absent key reads as, and the same calls, made in *describe* mode on an empty file, list
//! every key for the generated reference ([`super::reference`]). Every problem is collected,
//! with its key path; a value that cannot be read is replaced by its default so that reading
//! goes on.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::{CaptureFormat, GpioBackend, LineMode, Problem, ScoreKind};
use crate::model::options::{Precision, Runtime};

/// A type a config key holds: how serde reads it, and how the reference names and writes it.
pub(super) trait Value: DeserializeOwned {
    /// The type as the reference shows it: `integer`, `string`, `"auto" | "cpu" | "cuda"`.
    fn kind() -> String;
    /// The value written as TOML.
    fn to_toml(&self) -> String;
}

macro_rules! plain_value {
    ($($t:ty => $kind:literal),* $(,)?) => {$(
        impl Value for $t {
            fn kind() -> String {
                $kind.to_owned()
            }
            fn to_toml(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
plain_value!(bool => "boolean", u8 => "integer", u16 => "integer", u32 => "integer",
             u64 => "integer", usize => "integer");

impl Value for f32 {
    fn kind() -> String {
        "number".to_owned()
    }
    fn to_toml(&self) -> String {
        // TOML needs the decimal point: `0.0`, not `0`.
        format!("{self:?}")
    }
}

impl Value for String {
    fn kind() -> String {
        "string".to_owned()
    }
    fn to_toml(&self) -> String {
        toml::Value::String(self.clone()).to_string()
    }
}

impl Value for PathBuf {
    fn kind() -> String {
        "path (string; relative to the config file's folder)".to_owned()
    }
    fn to_toml(&self) -> String {
        toml::Value::String(self.to_string_lossy().into_owned()).to_string()
    }
}

/// `"a" | "b" | "c"`.
fn one_of(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// An enum read from a string: every variant with its name in the file (the match is
/// exhaustive, so a new variant must be listed here; a test parses every name listed).
macro_rules! enum_value {
    ($($t:ty: [$($name:literal => $variant:path),+ $(,)?]),* $(,)?) => {$(
        impl Value for $t {
            fn kind() -> String {
                one_of(&[$($name),+])
            }
            fn to_toml(&self) -> String {
                let name = match self {
                    $($variant => $name,)+
                };
                format!("{name:?}")
            }
        }
    )*};
}
enum_value!(
    Runtime: ["auto" => Runtime::Auto, "cpu" => Runtime::Cpu, "cuda" => Runtime::Cuda],
    Precision: [
        "fp32" => Precision::Fp32,
        "fp16" => Precision::Fp16,
        "int8-qdq" => Precision::Int8Qdq,
        "int8-dynamic" => Precision::Int8Dynamic,
        "int8-static" => Precision::Int8Static,
    ],
    CaptureFormat: [
        "auto" => CaptureFormat::Auto,
        "mjpeg" => CaptureFormat::Mjpeg,
        "yuyv" => CaptureFormat::Yuyv,
        "rgb24" => CaptureFormat::Rgb24,
        "grey" => CaptureFormat::Grey,
    ],
    ScoreKind: ["prob" => ScoreKind::Prob, "cosine" => ScoreKind::Cosine],
    GpioBackend: ["cdev" => GpioBackend::Cdev, "rppal" => GpioBackend::Rppal],
    LineMode: ["level" => LineMode::Level, "pulse" => LineMode::Pulse],
);

/// Whether a key must be given, and what it reads as when it is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// A problem when absent.
    Required,
    /// This value (as TOML) when absent.
    Default(String),
    /// Absent means "not set"; the meaning says what that does.
    Optional,
}

/// One key (or table) of the config, as the reader asks for it: the reference is made of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    /// The section: `camera`, `prompts[]` (an array of tables), `gpio.lines[]`; empty for the
    /// top level.
    pub section: String,
    /// The key within the section; for a table, its own name with `table` set.
    pub key: String,
    /// The type as shown to users.
    pub kind: String,
    /// Required, defaulted or optional.
    pub presence: Presence,
    /// An example value (TOML), for required keys and optional ones without a default.
    pub example: Option<&'static str>,
    /// What it means.
    pub doc: &'static str,
    /// Whether this entry is a table (`[camera]`) or an array of tables (`[[prompts]]`).
    pub table: Option<TableKind>,
}

/// A table or an array of tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    /// `[name]`.
    Table,
    /// `[[name]]`.
    Array,
}

/// Collects structural problems (or, in describe mode, the keys asked for) while reading a
/// [`toml::Table`] key by key.
#[derive(Default)]
pub(super) struct Reader {
    pub(super) problems: Vec<Problem>,
    /// `Some` in describe mode: every key asked for, in order, once.
    docs: Option<Vec<KeyDoc>>,
}

/// A table being read: the keys still in `map` at the end are unknown.
pub(super) struct Section {
    path: String,
    map: toml::Table,
    /// The keys asked for, in order: the allowed keys.
    asked: Vec<&'static str>,
    /// Problems inside are not reported: the table itself is missing and was reported.
    quiet: bool,
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Section {
    pub(super) fn root(map: toml::Table) -> Section {
        Section {
            path: String::new(),
            map,
            asked: Vec::new(),
            quiet: false,
        }
    }

    /// The key path of this table (`cameras[1]`).
    pub(super) fn path(&self) -> &str {
        &self.path
    }

    fn child(&self, path: String, map: toml::Table) -> Section {
        Section {
            path,
            map,
            asked: Vec::new(),
            quiet: self.quiet,
        }
    }
}

/// What one key is: its name, meaning and (for the reference) an example value.
pub(super) struct Key {
    name: &'static str,
    doc: &'static str,
    example: Option<&'static str>,
}

/// A key named `name` meaning `doc`.
pub(super) fn key(name: &'static str, doc: &'static str) -> Key {
    Key {
        name,
        doc,
        example: None,
    }
}

impl Key {
    /// The key's name.
    pub(super) fn name(&self) -> &'static str {
        self.name
    }

    /// With an example value (TOML) for the reference.
    pub(super) fn example(mut self, example: &'static str) -> Key {
        self.example = Some(example);
        self
    }
}

impl Reader {
    /// A reader that records every key asked for instead of reading anything.
    pub(super) fn describing() -> Reader {
        Reader {
            problems: Vec::new(),
            docs: Some(Vec::new()),
        }
    }

    /// Whether this reader describes the keys (for the reference) instead of reading a file.
    pub(super) fn is_describing(&self) -> bool {
        self.docs.is_some()
    }

    /// The keys a describing reader was asked for.
    pub(super) fn into_docs(self) -> Vec<KeyDoc> {
        self.docs.unwrap_or_default()
    }

    pub(super) fn problem(&mut self, s: &Section, key: &str, message: impl Into<String>) {
        if !s.quiet && self.docs.is_none() {
            self.problems.push(Problem {
                key: join(&s.path, key),
                message: message.into(),
            });
        }
    }

    /// Notes that `s` allows `k`, and in describe mode records it.
    fn ask(&mut self, s: &mut Section, k: &Key, kind: String, presence: Presence) {
        s.asked.push(k.name);
        if let Some(docs) = &mut self.docs {
            let section = s.path.clone();
            if !docs.iter().any(|d| d.section == section && d.key == k.name) {
                docs.push(KeyDoc {
                    section,
                    key: k.name.to_owned(),
                    kind,
                    presence,
                    example: k.example,
                    doc: k.doc,
                    table: None,
                });
            }
        }
    }

    fn parse<T: Value>(&mut self, s: &Section, name: &str, v: toml::Value) -> Option<T> {
        match v.try_into::<T>() {
            Ok(x) => Some(x),
            Err(e) => {
                self.problem(s, name, e.message().to_owned());
                None
            }
        }
    }

    /// An optional key without a default.
    pub(super) fn opt<T: Value>(&mut self, s: &mut Section, k: Key) -> Option<T> {
        self.ask(s, &k, T::kind(), Presence::Optional);
        let v = s.map.remove(k.name)?;
        self.parse(s, k.name, v)
    }

    /// A key with a default: the value read, or `default` when absent or unreadable.
    pub(super) fn or<T: Value>(&mut self, s: &mut Section, k: Key, default: T) -> T {
        self.ask(s, &k, T::kind(), Presence::Default(default.to_toml()));
        match s.map.remove(k.name) {
            Some(v) => self.parse(s, k.name, v).unwrap_or(default),
            None => default,
        }
    }

    /// A required key (a problem when absent).
    pub(super) fn req<T: Value>(&mut self, s: &mut Section, k: Key) -> Option<T> {
        self.ask(s, &k, T::kind(), Presence::Required);
        match s.map.remove(k.name) {
            Some(v) => self.parse(s, k.name, v),
            None => {
                self.problem(s, k.name, "missing (required)");
                None
            }
        }
    }

    /// A key whose value the caller reads itself (it may take several types); `kind` and
    /// `presence` are for the reference.
    pub(super) fn raw(
        &mut self,
        s: &mut Section,
        k: Key,
        kind: &str,
        presence: Presence,
    ) -> Option<toml::Value> {
        self.ask(s, &k, kind.to_owned(), presence);
        s.map.remove(k.name)
    }

    fn ask_table(&mut self, s: &mut Section, k: &Key, kind: TableKind, presence: Presence) {
        s.asked.push(k.name);
        if let Some(docs) = &mut self.docs {
            docs.push(KeyDoc {
                section: s.path.clone(),
                key: k.name.to_owned(),
                kind: match kind {
                    TableKind::Table => "table",
                    TableKind::Array => "array of tables",
                }
                .to_owned(),
                presence,
                example: None,
                doc: k.doc,
                table: Some(kind),
            });
        }
    }

    /// An optional table: `None` when absent (in describe mode, always an empty one).
    pub(super) fn table(&mut self, s: &mut Section, k: Key) -> Option<Section> {
        self.ask_table(s, &k, TableKind::Table, Presence::Optional);
        self.take_table(s, k.name)
    }

    /// A required table: when absent, `missing` is reported and an empty, quiet table is read
    /// instead, so the config gets its defaults without a second report of the same gap.
    pub(super) fn required_table(&mut self, s: &mut Section, k: Key, missing: &str) -> Section {
        self.ask_table(s, &k, TableKind::Table, Presence::Required);
        match self.take_table(s, k.name) {
            Some(t) => t,
            None => {
                self.problem(s, k.name, format!("missing (required): {missing}"));
                let mut t = s.child(join(&s.path, k.name), toml::Table::new());
                t.quiet = true;
                t
            }
        }
    }

    /// A table whose keys all have defaults: an empty one when absent.
    pub(super) fn defaults_table(&mut self, s: &mut Section, k: Key) -> Section {
        self.ask_table(s, &k, TableKind::Table, Presence::Optional);
        let name = k.name;
        self.take_table(s, name)
            .unwrap_or_else(|| s.child(join(&s.path, name), toml::Table::new()))
    }

    fn take_table(&mut self, s: &mut Section, name: &str) -> Option<Section> {
        let path = join(&s.path, name);
        match s.map.remove(name) {
            Some(toml::Value::Table(map)) => Some(s.child(path, map)),
            None if self.docs.is_some() => Some(s.child(path, toml::Table::new())),
            None => None,
            Some(other) => {
                self.problem(
                    s,
                    name,
                    format!("expected a table ([{name}]), got {}", other.type_str()),
                );
                None
            }
        }
    }

    /// An array of tables (`[[name]]`); in describe mode, one empty table. Absent, it reads as
    /// empty: `presence` is for the reference (the semantic checks report a required one that
    /// is empty).
    pub(super) fn tables(&mut self, s: &mut Section, k: Key, presence: Presence) -> Vec<Section> {
        self.ask_table(s, &k, TableKind::Array, presence);
        let path = join(&s.path, k.name);
        let Some(value) = s.map.remove(k.name) else {
            return match self.docs {
                Some(_) => vec![s.child(format!("{path}[]"), toml::Table::new())],
                None => Vec::new(),
            };
        };
        let toml::Value::Array(items) = value else {
            self.problem(
                s,
                k.name,
                format!(
                    "expected an array of tables ([[{}]]), got {}",
                    k.name,
                    value.type_str()
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            match item {
                toml::Value::Table(map) => out.push(s.child(item_path, map)),
                other => self.problem(
                    s,
                    &format!("{}[{i}]", k.name),
                    format!("expected a table, got {}", other.type_str()),
                ),
            }
        }
        out
    }

    /// Reports the keys nobody asked for.
    pub(super) fn finish(&mut self, s: Section) {
        for key in s.map.keys() {
            self.problem(
                &s,
                key,
                format!("unknown key (expected one of: {})", s.asked.join(", ")),
            );
        }
    }
}

/// `p` against the config file's folder, unless it is absolute (or empty).
pub(super) fn resolve(base: Option<&Path>, p: PathBuf) -> PathBuf {
    match base {
        Some(base) if p.is_relative() && !p.as_os_str().is_empty() => base.join(p),
        _ => p,
    }
}
