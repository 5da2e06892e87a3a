//! The routes: the four pages, their assets, the JSON API behind them and `/metrics`.
//!
//! Errors are JSON `{"error": "..."}` with a status that says whose fault it was: 400 for a
//! request that cannot be answered as asked (an empty `q`, a bad `since`), 404 for what does
//! not exist, 409 for what the config turned off, 500 for the store or the model failing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::{Router, middleware};
use serde::Deserialize;
use serde_json::{Value, json};

use super::live::EventItem;
use super::{AppState, BODY_LIMIT, pages};
use crate::calibration::{self, Scale, Target};
use crate::event::format_millis;
use crate::model::Bundle;
use crate::prompts::PromptEmbedder;
use crate::store::{Store, millis, sample};

/// Score points the Tune page plots at most (the best of each bucket of frames).
const TUNE_POINTS: usize = 1500;

/// An error answered as JSON.
#[derive(Debug)]
pub(super) struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

type Shared = Arc<AppState>;

/// The router: every route behind the token check but the script and the style sheet (the
/// same for everyone, and loaded by the page without the token in their address).
pub(super) fn router(state: Shared) -> Router {
    let guarded = Router::new()
        .route("/", get(|| async { pages::page("live") }))
        .route("/live", get(|| async { pages::page("live") }))
        .route("/events", get(|| async { pages::page("events") }))
        .route("/search", get(|| async { pages::page("search") }))
        .route("/tune", get(|| async { pages::page("tune") }))
        .route("/api/live", get(live))
        .route("/api/frame.jpg", get(frame))
        .route("/api/events", get(events))
        .route("/api/search", get(search))
        .route("/api/tune", get(tune))
        .route("/api/snapshot", get(snapshot))
        .route("/api/thumbnail", get(thumbnail))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such page".into()) })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            super::require_token,
        ));
    Router::new()
        .route("/assets/app.js", get(|| async { pages::script() }))
        .route("/assets/style.css", get(|| async { pages::style() }))
        .merge(guarded)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Runs blocking work (the store, the text tower) off the runtime's thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| internal(format!("the request failed: {e}")))?
}

async fn live(State(s): State<Shared>) -> Json<super::live::LiveView> {
    Json(s.live.view())
}

async fn frame(State(s): State<Shared>) -> Result<Response, ApiError> {
    let jpeg = blocking(
        move || match s.live.jpeg(|f| crate::snapshot::encode(f, 80)) {
            None => Err(ApiError(StatusCode::NOT_FOUND, "no frame yet".into())),
            Some(r) => r.map_err(internal),
        },
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/jpeg"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        jpeg.as_ref().clone(),
    )
        .into_response())
}

/// `since`: a duration ago (`90s`, `2h`, `3days`).
fn since_ms(since: Option<&str>, default: Option<Duration>) -> Result<i64, ApiError> {
    let d = match since.filter(|s| !s.trim().is_empty()) {
        Some(s) => Some(humantime::parse_duration(s.trim()).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("since={s:?} is not a duration like 90s, 2h or 3days: {e}"),
            )
        })?),
        None => default,
    };
    Ok(d.map_or(0, |d| {
        millis(
            SystemTime::now()
                .checked_sub(d)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        )
    }))
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    camera: Option<String>,
    label: Option<String>,
    limit: Option<usize>,
}

fn snapshot_url(path: &str) -> String {
    let p: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
    format!("/api/snapshot?path={p}")
}

fn event_json(e: &EventItem) -> Value {
    json!({
        "ts": format_millis(e.ts_ms),
        "ts_ms": e.ts_ms,
        "camera": e.camera,
        "label": e.label,
        "type": e.kind,
        "score": e.score,
        "snapshot": e.snapshot,
        // Only a file on disk: a start's snapshot is written when its window closes, and
        // retention deletes old ones.
        "snapshot_url": e.snapshot.as_deref().filter(|p| Path::new(p).is_file()).map(snapshot_url),
    })
}

async fn events(
    State(s): State<Shared>,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(100).min(1000);
    let camera = q.camera.filter(|c| !c.is_empty());
    let label = q.label.filter(|c| !c.is_empty());
    let items = blocking(move || {
        let Some(path) = &s.store else {
            return Ok(s
                .live
                .recent_events(camera.as_deref(), label.as_deref(), limit));
        };
        let Some(store) = Store::open_read(path).map_err(internal)? else {
            return Ok(Vec::new());
        };
        let metric = s.live.view_metric();
        let all = store.events(0, i64::MAX).map_err(internal)?;
        Ok(all
            .into_iter()
            .rev()
            .filter(|e| camera.as_deref().is_none_or(|c| e.camera == c))
            .filter(|e| label.as_deref().is_none_or(|l| e.label == l))
            .take(limit)
            .map(|e| {
                let v: Value = serde_json::from_str(&e.json).unwrap_or(Value::Null);
                EventItem {
                    score: v[metric_field(metric)].as_f64().map(|x| x as f32),
                    ts_ms: e.ts_ms,
                    camera: e.camera,
                    label: e.label,
                    kind: e.kind,
                    snapshot: e.snapshot,
                }
            })
            .collect())
    })
    .await?;
    let items = blocking(move || Ok(items.iter().map(event_json).collect())).await?;
    Ok(Json(Value::Array(items)))
}

/// The event JSON's field that holds the trigger's metric.
fn metric_field(metric: &str) -> &'static str {
    if metric == "prob" { "prob" } else { "score" }
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    q: Option<String>,
    since: Option<String>,
    camera: Option<String>,
    limit: Option<usize>,
}

/// The text of `q`, or a 400 that says what to send.
fn query_text(q: Option<String>, path: &str) -> Result<String, ApiError> {
    let text = q.unwrap_or_default().trim().to_owned();
    if text.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("q is empty: say what to look for, e.g. {path}?q=a+red+car"),
        ));
    }
    Ok(text)
}

/// The unit embedding of `text`: the bundle's text tower, loaded at the first call and kept.
fn embed(s: &AppState, text: &str) -> Result<Vec<f32>, ApiError> {
    let mut slot = s.embedder.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_none() {
        let bundle = Bundle::load(&s.bundle).map_err(internal)?;
        let has_tower = bundle.manifest.text.is_some();
        let embedder = PromptEmbedder::new(&bundle, &[]).map_err(internal)?;
        *slot = Some(embedder);
        if !has_tower {
            log::info!(
                "http: the bundle {} has no text tower: only its precomputed texts can be searched",
                s.bundle.display()
            );
        }
    }
    let Some(embedder) = slot.as_mut() else {
        return Err(internal("the text embedder did not load"));
    };
    embedder.embed(text).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "cannot embed {text:?} with the bundle {}: {e}",
                s.bundle.display()
            ),
        )
    })
}

/// The store's file, or a 409 saying that `[store]` is off.
fn store_path(s: &AppState) -> Result<&Path, ApiError> {
    s.store.as_deref().ok_or_else(|| {
        ApiError(
            StatusCode::CONFLICT,
            "the store is off ([store] enabled = false): there is no history to search".into(),
        )
    })
}

async fn search(
    State(s): State<Shared>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    let text = query_text(q.q, "/api/search")?;
    let since = since_ms(q.since.as_deref(), None)?;
    let limit = q.limit.unwrap_or(20).min(200);
    let camera = q.camera.filter(|c| !c.is_empty());
    let found = blocking(move || {
        let path = store_path(&s)?;
        let query = embed(&s, &text)?;
        let Some(store) = Store::open_read(path).map_err(internal)? else {
            return Ok(Vec::new());
        };
        let now = millis(SystemTime::now());
        let mut found = (s.search)(
            &store,
            &query,
            since,
            now,
            camera.as_deref(),
            s.gap_ms,
            limit,
        )
        .map_err(internal)?;
        // Each moment's picture: its camera's nearest thumbnail at or before its best frame.
        for m in &mut found {
            if let Some(t) = store
                .thumbnail(&m.best.camera, m.best.ts_ms)
                .map_err(internal)?
            {
                m.best.thumbnail = Some(format!("/api/thumbnail?id={}", t.id));
            }
        }
        Ok(found)
    })
    .await?;
    Ok(Json(Value::Array(
        found
            .iter()
            .map(|m| {
                let mut v = m.to_json();
                v["ts_ms"] = json!(m.best.ts_ms);
                v["hits"] = json!(m.hits);
                v
            })
            .collect(),
    )))
}

/// At most `max` points of `(ts, score)`: the best of each run of frames, so peaks survive.
fn thin(points: &[(i64, f32)], max: usize) -> Vec<(i64, f32)> {
    if points.len() <= max || max == 0 {
        return points.to_vec();
    }
    points
        .chunks(points.len().div_ceil(max))
        .filter_map(|c| c.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)))
        .collect()
}

/// A label name from a prompt text: lower-case letters and digits, `_` between words.
fn label_for(text: &str) -> String {
    let words: Vec<String> = text
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty() && !matches!(*w, "a" | "an" | "the" | "of" | "photo"))
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let label = words.join("_");
    if label.is_empty() {
        "label".into()
    } else {
        label
    }
}

/// The `[[prompts]]` lines for `text` and its proposed threshold.
fn toml_lines(text: &str, threshold: Option<f64>, prob_metric: bool, refused: &str) -> String {
    let mut out = String::from("[[prompts]]\n");
    out += &format!("label = \"{}\"\n", label_for(text));
    out += &format!("text = {}\n", toml::Value::String(text.to_owned()));
    match threshold {
        Some(t) if !prob_metric => out += &format!("threshold = {t}\n"),
        Some(t) => {
            out += &format!(
                "# cosine {t} over the stored history; this config scores with \
                 matcher.score = \"prob\":\n# run `edgeclip calibrate` for a probability threshold\n"
            );
        }
        None => out += &format!("# no threshold proposed: {}\n", refused.replace('\n', " ")),
    }
    out
}

/// Where sorted `scores` split into two groups best (Otsu's method: the cut that maximises the
/// variance between the groups): the lowest score of the upper group. `None` for fewer than two
/// distinct scores.
fn two_groups(scores: &[f64]) -> Option<f64> {
    let mut s: Vec<f64> = scores.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    let total: f64 = s.iter().sum();
    let mut below = 0.0;
    let mut best: Option<(f64, f64)> = None;
    for k in 1..s.len() {
        below += s[k - 1];
        if s[k] == s[k - 1] {
            continue;
        }
        let (w0, w1) = (k as f64, n - k as f64);
        let between = w0 * w1 * (below / w0 - (total - below) / w1).powi(2);
        if best.is_none_or(|(b, _)| between > b) {
            best = Some((between, s[k]));
        }
    }
    best.map(|(_, cut)| cut)
}

async fn tune(
    State(s): State<Shared>,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Value>, ApiError> {
    let text = query_text(q.q, "/api/tune")?;
    let since = since_ms(q.since.as_deref(), Some(Duration::from_secs(86_400)))?;
    let camera = q.camera.filter(|c| !c.is_empty());
    blocking(move || {
        let path = store_path(&s)?;
        let query = embed(&s, &text)?;
        let mut points: Vec<(i64, f32)> = Vec::new();
        if let Some(store) = Store::open_read(path).map_err(internal)? {
            let now = millis(SystemTime::now());
            store
                .for_each_frame(since, now, camera.as_deref(), |f| {
                    if f.embedding.len() == query.len() {
                        points.push((f.ts_ms, sample::score_bytes(f.embedding, f.scale, &query)));
                    }
                })
                .map_err(internal)?;
        }
        let t = s.tune;
        let target = Target {
            false_alarms_per_day: t.false_alarms_per_day,
            fps: t.fps,
        };
        // The history is not quiet footage: the thing may be in it. Its scores split in two
        // where they separate best ([`two_groups`]): below the line quiet, at or above it
        // examples. A history without the thing splits its noise, whose extrapolated quiet bound
        // then reaches the upper part, and calibration refuses (the overlap).
        let scores: Vec<f64> = points.iter().map(|p| f64::from(p.1)).collect();
        let line = two_groups(&scores).unwrap_or(f64::INFINITY);
        let (positives, quiet): (Vec<f64>, Vec<f64>) = scores.iter().partition(|&&x| x >= line);
        let proposal =
            calibration::propose(Scale::Cosine, &quiet, &positives, t.enter_frames, &target);
        let (threshold, why) = match proposal.outcome {
            Ok(th) => (Some(th), String::new()),
            Err(r) => (None, r.to_string()),
        };
        let thinned = thin(&points, TUNE_POINTS);
        Ok(Json(json!({
            "q": text,
            "metric": "cosine",
            "frames": points.len(),
            "t": thinned.iter().map(|p| p.0).collect::<Vec<_>>(),
            "scores": thinned.iter().map(|p| p.1).collect::<Vec<_>>(),
            "max": points.iter().map(|p| p.1).max_by(|a, b| a.total_cmp(b)),
            "threshold": threshold,
            "split": line.is_finite().then_some(line),
            "quiet_frames": quiet.len(),
            "example_frames": positives.len(),
            "toml": toml_lines(&text, threshold, t.prob_metric, &why),
            "refused": (!why.is_empty()).then_some(why),
            "target_per_day": t.false_alarms_per_day,
        })))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct SnapshotQuery {
    path: Option<String>,
}

/// A snapshot file, only from under the snapshot folder.
async fn snapshot(
    State(s): State<Shared>,
    Query(q): Query<SnapshotQuery>,
) -> Result<Response, ApiError> {
    let path = PathBuf::from(q.path.unwrap_or_default());
    let bytes = blocking(move || {
        let not_found = || ApiError(StatusCode::NOT_FOUND, "no such snapshot".into());
        let root = s.snapshots.as_ref().ok_or_else(not_found)?;
        let root = root.canonicalize().map_err(|_| not_found())?;
        let file = path.canonicalize().map_err(|_| not_found())?;
        if !file.starts_with(&root) {
            return Err(not_found());
        }
        std::fs::read(&file).map_err(|_| not_found())
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response())
}

#[derive(Deserialize)]
struct ThumbnailQuery {
    id: Option<i64>,
}

/// A stored thumbnail by its id (search results link to them).
async fn thumbnail(
    State(s): State<Shared>,
    Query(q): Query<ThumbnailQuery>,
) -> Result<Response, ApiError> {
    let id = q.id.ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "/api/thumbnail: give the thumbnail's id, ?id=N (search results link to them)".into(),
        )
    })?;
    let jpeg = blocking(move || {
        let not_found = || ApiError(StatusCode::NOT_FOUND, format!("no thumbnail {id}"));
        let path = store_path(&s)?;
        let store = Store::open_read(path)
            .map_err(internal)?
            .ok_or_else(not_found)?;
        let t = store.thumbnail_by_id(id).map_err(internal)?;
        t.map(|t| t.jpeg).ok_or_else(not_found)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response())
}

async fn metrics(State(s): State<Shared>) -> Result<Response, ApiError> {
    let text = blocking(move || {
        if let Some(path) = &s.store
            && let Ok(Some(store)) = Store::open_read(path)
        {
            let bytes = store.used_bytes().unwrap_or(0);
            let frames = store.frame_count().unwrap_or(0);
            s.live.metrics.store(bytes, frames);
        }
        Ok(s.live.metrics.encode())
    })
    .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_peaks() {
        let points: Vec<(i64, f32)> = (0..10)
            .map(|i| (i, if i == 7 { 9.0 } else { 0.0 }))
            .collect();
        let t = thin(&points, 3);
        assert!(t.len() <= 3);
        assert!(t.contains(&(7, 9.0)));
        assert_eq!(thin(&points, 20), points);
    }

    #[test]
    fn two_groups_cuts_in_the_widest_gap_between_clusters() {
        let mut scores = vec![0.25, 0.26, 0.3, 0.24, -0.2, -0.18, 0.27, 0.33];
        scores.extend([0.73, 0.78, 0.76]);
        assert_eq!(two_groups(&scores), Some(0.73));
        assert_eq!(two_groups(&[0.5, 0.5, 0.5]), None);
        assert_eq!(two_groups(&[]), None);
        assert_eq!(two_groups(&[0.1, 0.9]), Some(0.9));
    }

    #[test]
    fn toml_lines_quote_the_text_and_name_a_label() {
        let t = toml_lines("a \"red\" car", Some(0.25), false, "");
        assert!(t.contains("label = \"red_car\"\n"), "{t}");
        assert!(t.contains("threshold = 0.25\n"), "{t}");
        let parsed: toml::Table = toml::from_str(&t.replace("[[prompts]]", "")).unwrap();
        assert_eq!(parsed["text"].as_str(), Some("a \"red\" car"));
        assert!(toml_lines("x", Some(0.3), true, "").contains("edgeclip calibrate"));
        assert!(toml_lines("x", None, false, "too few").contains("no threshold proposed: too few"));
    }
}
