//! The problem list the semantic checks fill, and the name rule every name that ends up in an
//! MQTT topic or a file name follows.

use super::Problem;

/// Labels and camera names end up in MQTT topics, Home Assistant ids and file names.
pub(super) fn check_name(problems: &mut Vec<Problem>, key: String, name: &str) {
    if name.is_empty() {
        problems.push(Problem {
            key,
            message: "must not be empty".into(),
        });
    } else if name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        problems.push(Problem {
            key,
            message: format!(
                "must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-' (it is used in MQTT \
                 topics), got {name:?}"
            ),
        });
    }
}

pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
}

impl Checker {
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn range_f32(&mut self, key: impl Into<String>, v: f32, lo: f32, hi: f32) {
        if !(v >= lo && v <= hi) {
            self.push(key, format!("must be in [{lo}, {hi}], got {v}"));
        }
    }

    pub(super) fn range_u64(&mut self, key: impl Into<String>, v: u64, lo: u64, hi: u64) {
        if v < lo || v > hi {
            self.push(key, format!("must be in [{lo}, {hi}], got {v}"));
        }
    }
}
