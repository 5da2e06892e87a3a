//! `matcher.calibration`: the file `edgeclip calibrate` writes, read into the prompts'
//! thresholds.
//!
//! ```toml
//! score = "prob"          # the metric the thresholds are for: must be matcher.score
//!
//! [thresholds]
//! red_circle = 0.39       # a [[prompts]] label = its threshold
//! ```
//!
//! Every problem is reported under the key `matcher.calibration`, its message naming the file
//! and the key in it. A label's own `threshold` and the file must not both set one: which one
//! wins would be a guess.

use std::path::Path;

use super::reader::{Reader, Section};
use super::{PromptConfig, ScoreKind};

const KEY: &str = "calibration";

fn score_name(score: ScoreKind) -> &'static str {
    match score {
        ScoreKind::Prob => "prob",
        ScoreKind::Cosine => "cosine",
    }
}

/// Reads `file` and sets the threshold of every label it names; problems go to `r` under
/// `s`'s `calibration` key.
pub(super) fn apply(
    r: &mut Reader,
    s: &Section,
    file: &Path,
    score: ScoreKind,
    prompts: &mut [PromptConfig],
) {
    let mut problem = |message: String| r.problem(s, KEY, format!("{}: {message}", file.display()));
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return problem(format!("cannot read the calibration file: {e}")),
    };
    let mut table: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => return problem(format!("TOML syntax error: {}", e.message())),
    };
    match table.remove("score") {
        Some(toml::Value::String(s)) if s == score_name(score) => {}
        Some(toml::Value::String(s)) if s == "prob" || s == "cosine" => problem(format!(
            "score = {s:?}, but matcher.score is {:?}: the thresholds are for another metric; \
             calibrate again with this config",
            score_name(score)
        )),
        Some(other) => problem(format!(
            "score: expected \"prob\" or \"cosine\", got {other}"
        )),
        None => problem("score: missing (required: the metric the thresholds are for)".into()),
    }
    let thresholds = match table.remove("thresholds") {
        Some(toml::Value::Table(t)) => t,
        Some(other) => {
            return problem(format!(
                "thresholds: expected a table of label = threshold, got {}",
                other.type_str()
            ));
        }
        None => {
            return problem("thresholds: missing (required: a table of label = threshold)".into());
        }
    };
    for unknown in table.keys() {
        problem(format!(
            "unknown key `{unknown}` (expected `score` and `thresholds`)"
        ));
    }
    let (lo, hi) = score.threshold_range();
    for (label, value) in thresholds {
        let at = format!("thresholds.{label}");
        let v = match value {
            toml::Value::Float(f) => f as f32,
            toml::Value::Integer(i) => i as f32,
            other => {
                problem(format!("{at}: expected a number, got {}", other.type_str()));
                continue;
            }
        };
        let Some((i, prompt)) = prompts
            .iter_mut()
            .enumerate()
            .find(|(_, p)| p.label == label)
        else {
            problem(format!(
                "{at}: no [[prompts]] entry has the label {label:?}"
            ));
            continue;
        };
        if !(lo..=hi).contains(&v) {
            problem(format!("{at}: {v} is outside [{lo}, {hi}]"));
        } else if prompt.threshold.is_some() {
            problem(format!(
                "{at}: prompts[{i}].threshold is set too; keep one of the two"
            ));
        } else {
            prompt.threshold = Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// A config naming `calib.toml` (with `text` as its content) in a temporary folder.
    fn load(extra_prompt: &str, score: &str, text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("calib.toml"), text).unwrap();
        let config = format!(
            "[camera]\nsource = \"files:x/*.jpg\"\n[model]\nbundle = \"m\"\n\
             [[prompts]]\nlabel = \"cat\"\ntext = \"a cat\"\n\
             [[prompts]]\nlabel = \"dog\"\ntext = \"a dog\"\n{extra_prompt}\n\
             [matcher]\nscore = \"{score}\"\ncalibration = \"calib.toml\"\n"
        );
        let path = dir.path().join("edgeclip.toml");
        std::fs::write(&path, config).unwrap();
        Config::from_file(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn thresholds_are_read_into_the_prompts() {
        let c = load(
            "",
            "prob",
            "score = \"prob\"\n[thresholds]\ncat = 0.25\ndog = 1\n",
        )
        .unwrap();
        assert_eq!(c.prompts[0].threshold, Some(0.25));
        assert_eq!(c.prompts[1].threshold, Some(1.0));
        assert!(c.matcher.calibration.unwrap().ends_with("calib.toml"));
        // A label the file leaves out keeps matcher.threshold.
        let c = load(
            "",
            "cosine",
            "score = \"cosine\"\n[thresholds]\ndog = -0.5\n",
        )
        .unwrap();
        assert_eq!(
            (c.prompts[0].threshold, c.prompts[1].threshold),
            (None, Some(-0.5))
        );
    }

    #[test]
    fn every_problem_names_the_file_and_its_key() {
        let e = load(
            "threshold = 0.7",
            "prob",
            "score = \"prob\"\nextra = 1\n[thresholds]\ncat = 1.5\ndog = 0.3\nbird = 0.2\n\
             cat2 = \"high\"\n",
        )
        .unwrap_err();
        for needle in [
            "matcher.calibration: ",
            "calib.toml: unknown key `extra`",
            "calib.toml: thresholds.cat: 1.5 is outside [0, 1]",
            "calib.toml: thresholds.dog: prompts[1].threshold is set too",
            "calib.toml: thresholds.bird: no [[prompts]] entry has the label \"bird\"",
            "calib.toml: thresholds.cat2: expected a number, got string",
        ] {
            assert!(e.contains(needle), "{needle:?} missing from:\n{e}");
        }
        assert_eq!(e.lines().count(), 5, "{e}");
    }

    #[test]
    fn a_calibration_for_another_metric_is_refused() {
        let e = load("", "cosine", "score = \"prob\"\n[thresholds]\ncat = 0.5\n").unwrap_err();
        assert!(
            e.contains("score = \"prob\", but matcher.score is \"cosine\""),
            "{e}"
        );
        let e = load("", "prob", "[thresholds]\ncat = 0.5\n").unwrap_err();
        assert!(e.contains("score: missing"), "{e}");
        let e = load("", "prob", "score = \"prob\"\n").unwrap_err();
        assert!(e.contains("thresholds: missing"), "{e}");
    }

    #[test]
    fn an_unreadable_file_is_one_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edgeclip.toml");
        std::fs::write(
            &path,
            "[camera]\nsource = \"files:x/*.jpg\"\n[model]\nbundle = \"m\"\n\
             [[prompts]]\nlabel = \"cat\"\ntext = \"a cat\"\n\
             [matcher]\ncalibration = \"missing.toml\"\n",
        )
        .unwrap();
        let e = Config::from_file(&path).unwrap_err();
        assert_eq!(e.problems.len(), 1, "{e}");
        assert_eq!(e.problems[0].key, "matcher.calibration");
        assert!(
            e.problems[0].message.contains("missing.toml: cannot read"),
            "{e}"
        );
        let e = load("", "prob", "score = \n").unwrap_err();
        assert!(e.contains("calib.toml: TOML syntax error"), "{e}");
    }
}
