//! The four pages: a small server-rendered frame (title, navigation, the page's skeleton) and
//! the plain script and style sheet in `assets/`, compiled into the binary (the device may be
//! offline: nothing comes from a CDN). The script fills each page from the JSON API.

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// The pages, their titles and their skeletons.
const PAGES: [(&str, &str, &str); 4] = [
    (
        "live",
        "Live",
        r#"<section class="live"><figure><img id="frame" alt="the latest frame"><figcaption id="frame-info">waiting for a frame</figcaption></figure>
<div><canvas id="chart" width="600" height="260"></canvas><table id="labels"><thead><tr><th>label</th><th>now</th><th>threshold</th><th>enter / exit</th><th>state</th></tr></thead><tbody></tbody></table></div></section>"#,
    ),
    (
        "events",
        "Events",
        r#"<form id="filter"><label>camera <input name="camera"></label> <label>label <input name="label"></label> <button>Filter</button></form>
<table id="events"><thead><tr><th>time</th><th>camera</th><th>label</th><th>type</th><th>score</th><th>snapshot</th></tr></thead><tbody></tbody></table>"#,
    ),
    (
        "search",
        "Search",
        r#"<form id="query"><input name="q" placeholder="a red car" size="40"> <label>since <input name="since" placeholder="24h" size="6"></label> <button>Search</button></form>
<p id="summary"></p><ol id="results"></ol>"#,
    ),
    (
        "tune",
        "Tune",
        r#"<form id="query"><input name="q" placeholder="a photo of a person" size="40"> <label>since <input name="since" placeholder="24h" size="6"></label> <button>Try</button></form>
<p id="summary"></p><canvas id="chart" width="900" height="300"></canvas><pre id="toml"></pre>"#,
    ),
];

/// The page `name` (one of [`PAGES`]).
pub(super) fn page(name: &str) -> Html<String> {
    let (_, title, body) = PAGES
        .iter()
        .find(|p| p.0 == name)
        .copied()
        .unwrap_or(PAGES[0]);
    let nav: String = PAGES
        .iter()
        .map(|(n, t, _)| {
            let class = if *n == name { " class=\"here\"" } else { "" };
            format!("<a href=\"/{n}\"{class}>{t}</a>")
        })
        .collect();
    Html(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>edgeclip: {title}</title><link rel=\"icon\" href=\"data:,\">\
         <link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\n\
         <body data-page=\"{name}\"><header><b>edgeclip</b> <nav>{nav}</nav></header>\n\
         <main>{body}<p id=\"error\" role=\"alert\"></p></main>\n\
         <script src=\"/assets/app.js\"></script></body></html>\n"
    ))
}

/// `assets/app.js`.
pub(super) fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// `assets/style.css`.
pub(super) fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}
