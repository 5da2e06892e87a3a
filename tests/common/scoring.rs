//! Scores a run's start events against a generated clip's truth (`scenes.rs`): which starts are
//! false (a label starting outside the visits of its own prompt) and how soon each target visit
//! was found. Shared by `tests/open_set.rs` and `examples/false_alarms.rs`.
#![allow(dead_code)]

use edgeclip::event::Event;

use crate::scenes::{Role, Truth};

/// One visit of a clip: what passed and in which frames it was in view.
#[derive(Debug, Clone)]
pub struct Visit {
    pub prompt: Option<String>,
    pub role: Role,
    pub colour: String,
    pub shape: String,
    pub first: u64,
    pub last: u64,
}

/// The visits of a clip, in order.
pub fn visits(truth: &Truth) -> Vec<Visit> {
    let mut out: Vec<(usize, Visit)> = Vec::new();
    for f in &truth.frames {
        for o in f.objects.iter().filter(|o| o.in_view) {
            let frame = u64::from(f.frame);
            match out.iter_mut().find(|(v, _)| *v == o.visit) {
                Some((_, v)) => v.last = frame,
                None => out.push((
                    o.visit,
                    Visit {
                        prompt: o.prompt.clone(),
                        role: o.role,
                        colour: o.colour.clone(),
                        shape: o.shape.clone(),
                        first: frame,
                        last: frame,
                    },
                )),
            }
        }
    }
    out.into_iter().map(|(_, v)| v).collect()
}

/// The visit a start at `frame` belongs to (slack: 10 frames before, 5 after).
pub fn visit_at(visits: &[Visit], frame: u64) -> Option<&Visit> {
    visits
        .iter()
        .find(|v| v.first.saturating_sub(10) <= frame && frame <= v.last + 5)
}

/// Starts of a label outside the visits of its own prompt; `labels` maps label to prompt.
pub fn false_starts<'a>(
    starts: &'a [Event],
    visits: &[Visit],
    labels: &[(&str, &str)],
) -> Vec<&'a Event> {
    starts
        .iter()
        .filter(|e| {
            let prompt = labels.iter().find(|(l, _)| *l == e.label).map(|(_, p)| *p);
            visit_at(visits, e.frame).is_none_or(|v| v.prompt.as_deref() != prompt)
        })
        .collect()
}

/// Per target visit of one of `labels`' prompts: its label and how many frames after the visit
/// began its label started (`None`: never).
pub fn target_delays(
    starts: &[Event],
    visits: &[Visit],
    labels: &[(&str, &str)],
) -> Vec<(String, Option<u64>)> {
    visits
        .iter()
        .filter_map(|v| {
            let (label, _) = labels
                .iter()
                .find(|(_, p)| Some(*p) == v.prompt.as_deref())?;
            let start = starts
                .iter()
                .filter(|e| e.label == *label)
                .find(|e| visit_at(visits, e.frame).is_some_and(|w| w.first == v.first));
            Some((
                label.to_string(),
                start.map(|e| e.frame.saturating_sub(v.first)),
            ))
        })
        .collect()
}
