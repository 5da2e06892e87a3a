//! The web page and its API (issue 26) against the real daemon: the binary replays the demo
//! clip in a loop with `[store]`, `[snapshots]` and `[http]` on (a token, a free port), and curl,
//! a real HTTP client, asks every endpoint. Raw TCP sends what no client would: garbage, an
//! endless header, connections that never send a byte; the server must answer the next normal
//! request all the same. A port in use and an open address without a token stop the start with
//! the key named.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const TOKEN: &str = "test-token-0123456789";
/// An upper bound for waits that only fail a broken build (never a timing assertion).
const PATIENCE: Duration = Duration::from_secs(120);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgeclip")
}

fn root() -> PathBuf {
    std::env::var_os("EDGECLIP_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf())
}

/// `firmware-config/demo.toml` with absolute paths, looping, and `extra` appended.
fn config(dir: &Path, extra: &str) -> PathBuf {
    let root = root();
    let demo = std::fs::read_to_string(root.join("firmware-config/demo.toml")).unwrap();
    let clip = root.join("tests/data/clip/*.jpg");
    let text = demo
        .replace(
            "\"files:../tests/data/clip/*.jpg\"",
            &format!("\"files:{}\"", clip.display()),
        )
        .replace(
            "\"../models/demo\"",
            &format!("\"{}\"", root.join("models/demo").display()),
        )
        .replace("loop = false", "loop = true");
    assert_ne!(text, demo, "demo.toml's paths changed: update this test");
    let path = dir.join("edgeclip.toml");
    std::fs::write(&path, format!("{text}\n{extra}\n")).unwrap();
    path
}

/// The daemon, its port and its log; stopped (SIGTERM) when dropped.
struct Daemon {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn command(dir: &Path) -> Command {
    let mut c = Command::new(bin());
    c.env("RUST_LOG", "info")
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("XDG_DATA_HOME", dir.join("data"));
    c
}

/// Starts `edgeclip run` and waits for the line that says where it serves.
fn start(dir: &Path, extra: &str) -> Daemon {
    start_with(dir, &config(dir, extra))
}

/// Starts `edgeclip run` with `config`, as [`start`].
fn start_with(dir: &Path, config: &Path) -> Daemon {
    let mut child = command(dir)
        .args(["run", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("serving the web page on http://").nth(1) {
                let port = rest
                    .trim_end_matches('/')
                    .rsplit(':')
                    .next()
                    .unwrap()
                    .to_owned();
                let _ = tx.send(port.parse::<u16>().unwrap());
            }
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    let port = rx
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("the server did not start:\n{}", log.lock().unwrap()));
    Daemon { child, port, log }
}

/// `curl` (status, body) for `path`, with the token as a header when `auth`.
fn curl(d: &Daemon, path: &str, auth: bool) -> (u16, Vec<u8>) {
    let mut c = Command::new("curl");
    c.args(["-s", "--max-time", "60", "-o", "-", "-w", "\n%{http_code}"]);
    if auth {
        c.args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
    }
    let out = c
        .arg(format!("http://127.0.0.1:{}{path}", d.port))
        .output()
        .unwrap();
    let mut body = out.stdout;
    let nl = body.iter().rposition(|&b| b == b'\n').unwrap();
    let code = String::from_utf8_lossy(&body[nl + 1..])
        .parse()
        .unwrap_or(0);
    body.truncate(nl);
    (code, body)
}

fn json(d: &Daemon, path: &str) -> Value {
    let (code, body) = curl(d, path, true);
    assert_eq!(code, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Asks `path` until `ready` holds for its JSON.
fn wait_for(d: &Daemon, path: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let until = Instant::now() + PATIENCE;
    loop {
        let v = json(d, path);
        if ready(&v) {
            return v;
        }
        assert!(Instant::now() < until, "{path} never became ready: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sends `bytes` on a raw connection and reads what comes back until the server closes it.
fn raw(d: &Daemon, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn every_endpoint_answers_with_the_token_and_survives_bad_clients() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        dir.path(),
        &format!(
            "[snapshots]\nenabled = true\ndir = \"snaps\"\n\n\
             [store]\nenabled = true\npath = \"store.sqlite\"\nsample_s = 0\n\n\
             [http]\nenabled = true\nlisten = \"127.0.0.1:0\"\ntoken = \"{TOKEN}\"\n\
             max_connections = 4\nheader_timeout_s = 1\n"
        ),
    );

    // The token: none or a wrong one is a 401; the header and the query both work.
    assert_eq!(curl(&d, "/live", false).0, 401);
    assert_eq!(curl(&d, "/api/live?token=wrong-token-000", false).0, 401);
    assert_eq!(curl(&d, &format!("/api/live?token={TOKEN}"), false).0, 200);
    let (code, page) = curl(&d, "/live", true);
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&page).contains("/assets/app.js"));
    for page in [
        "/events",
        "/search",
        "/tune",
        "/assets/app.js",
        "/assets/style.css",
    ] {
        assert_eq!(curl(&d, page, true).0, 200, "{page}");
    }
    assert_eq!(curl(&d, "/no-such-page", true).0, 404);
    assert_eq!(curl(&d, "/no-such-page", false).0, 401);
    // The script and style sheet are the same for everyone: no token needed.
    assert_eq!(curl(&d, "/assets/app.js", false).0, 200);

    // Live: the labels with their thresholds, scores moving, the latest frame as a JPEG.
    let live = wait_for(&d, "/api/live", |v| v["frames"].as_u64() > Some(20));
    let labels = live["labels"].as_array().unwrap();
    assert_eq!(labels.len(), 4, "{live}");
    assert_eq!(labels[0]["label"], "red_circle");
    assert_eq!(labels[0]["threshold"], 0.5);
    assert_eq!(live["metric"], "prob");
    let t = live["t"].as_array().unwrap().len();
    assert!(t > 0);
    for s in live["scores"].as_array().unwrap() {
        assert_eq!(s.as_array().unwrap().len(), t);
    }
    let (code, jpeg) = curl(&d, "/api/frame.jpg", true);
    assert_eq!(code, 200);
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);

    // Events from the store: the red circle's start, with its snapshot served.
    let events = wait_for(&d, "/api/events?label=red_circle", |v| {
        v.as_array()
            .unwrap()
            .iter()
            .any(|e| e["snapshot_url"].is_string())
    });
    let events = events.as_array().unwrap();
    assert!(
        events.iter().all(|e| e["label"] == "red_circle"),
        "{events:?}"
    );
    let with_snapshot = events
        .iter()
        .find(|e| e["snapshot_url"].is_string())
        .unwrap();
    assert_eq!(with_snapshot["type"], "start");
    let (code, snap) = curl(&d, with_snapshot["snapshot_url"].as_str().unwrap(), true);
    assert_eq!(code, 200);
    assert_eq!(&snap[..2], &[0xFF, 0xD8]);
    let (code, _) = curl(&d, "/api/snapshot?path=%2Fetc%2Fpasswd", true);
    assert_eq!(code, 404, "only files under the snapshot folder are served");

    // Search and Tune: the red circle is found; an empty text is a clear 400.
    let found = json(&d, "/api/search?q=a+photo+of+a+red+circle");
    let found = found.as_array().unwrap();
    assert!(!found.is_empty());
    for key in ["ts", "camera", "frame", "score", "thumbnail"] {
        assert!(found[0].get(key).is_some(), "{key} missing: {}", found[0]);
    }
    assert_eq!(found[0]["camera"], "demo");
    // Each moment links its camera's nearest thumbnail, a small JPEG.
    let link = found[0]["thumbnail"].as_str().expect("a thumbnail link");
    assert!(link.starts_with("/api/thumbnail?id="), "{link}");
    let (code, jpeg) = curl(&d, link, true);
    assert_eq!(code, 200);
    let thumb = image::load_from_memory(&jpeg).expect("the thumbnail decodes");
    assert!((100..=160).contains(&thumb.width()), "{}", thumb.width());
    assert_eq!(curl(&d, "/api/thumbnail?id=999999", true).0, 404);
    assert_eq!(curl(&d, "/api/thumbnail", true).0, 400);
    let (code, body) = curl(&d, "/api/search?q=+", true);
    assert_eq!(code, 400);
    assert!(String::from_utf8_lossy(&body).contains("q is empty"));
    assert_eq!(curl(&d, "/api/search?q=x&since=yesterday", true).0, 400);
    // Enough of the clip stored past the red circle for quiet footage (the first 13 frames
    // are all the quiet it has before the circle comes).
    let tune = wait_for(&d, "/api/tune?q=a+photo+of+a+red+circle", |v| {
        v["quiet_frames"].as_u64() >= Some(60)
    });
    assert!(tune["frames"].as_u64() > Some(0), "{tune}");
    // The clip's red-circle frames are the examples, the rest quiet: a threshold between them.
    let best = tune["max"].as_f64().unwrap();
    let line = tune["split"].as_f64().unwrap();
    let proposed = tune["threshold"]
        .as_f64()
        .unwrap_or_else(|| panic!("no threshold: {tune}"));
    assert!(tune["example_frames"].as_u64() > Some(0), "{tune}");
    let quiet_max = tune["scores"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_f64())
        .filter(|&v| v < line)
        .fold(f64::MIN, f64::max);
    assert!(proposed > quiet_max && proposed < best, "{tune}");
    let toml = tune["toml"].as_str().unwrap();
    assert!(toml.contains("[[prompts]]") && toml.contains("text = \"a photo of a red circle\""));

    // /metrics in the Prometheus text format.
    let (code, metrics) = curl(&d, "/metrics", true);
    let metrics = String::from_utf8(metrics).unwrap();
    assert_eq!(code, 200);
    for needle in [
        "edgeclip_frames_processed_total ",
        "edgeclip_frame_latency_seconds_bucket{le=",
        "edgeclip_events_total{label=\"red_circle\",type=\"start\"}",
        "edgeclip_store_frames ",
        "edgeclip_frames_dropped_total ",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }

    // Malformed requests: answered with an error or closed, never a crash.
    let garbage = raw(&d, b"GARBAGE \x00\x01\x02\r\n\r\n");
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400"),
        "{garbage}"
    );
    let long = raw(
        &d,
        &[b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 1 << 20]].concat(),
    );
    assert!(
        long.is_empty() || long.starts_with("HTTP/1.1 431"),
        "{}",
        &long[..80.min(long.len())]
    );
    assert_eq!(curl(&d, "/api/events?limit=many", true).0, 400);

    // Slow clients: more idle connections than the server serves at once; each is dropped
    // after the header timeout and the normal request behind them is answered.
    let idle: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(("127.0.0.1", d.port)).unwrap())
        .collect();
    assert_eq!(curl(&d, "/api/live", true).0, 200);
    drop(idle);
    assert!(d.log.lock().unwrap().contains("http: serving"));

    // SIGHUP reloads the prompts: the Live page shows the new threshold.
    let config = dir.path().join("edgeclip.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("threshold = 0.5", "threshold = 0.625"),
    )
    .unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for(&d, "/api/live", |v| v["labels"][0]["threshold"] == 0.625);
}

#[test]
fn without_the_store_events_come_from_memory_and_search_says_the_store_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let d = start(
        dir.path(),
        "[snapshots]\nenabled = false\n\n[http]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
    );
    // On the loopback without a token: no token asked for.
    let events = wait_for(&d, "/api/events", |v| !v.as_array().unwrap().is_empty());
    let first = &events[0];
    assert_eq!(first["camera"], "demo");
    assert!(first["snapshot_url"].is_null(), "{first}");
    assert!(first["score"].as_f64().is_some(), "{first}");
    let (code, body) = curl(&d, "/api/search?q=a+photo+of+a+red+circle", false);
    assert_eq!(code, 409);
    assert!(String::from_utf8_lossy(&body).contains("[store] enabled = false"));
    let live = json(&d, "/api/live");
    assert!(live["labels"].as_array().unwrap().len() == 4, "{live}");
}

#[test]
fn a_port_in_use_stops_the_start_naming_http_listen() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = config(
        dir.path(),
        &format!("[http]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let out: Output = command(dir.path())
        .args(["run", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.listen") && err.contains(&port.to_string()),
        "{err}"
    );
}

#[test]
fn an_open_address_without_a_token_is_refused_at_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "[http]\nenabled = true\nlisten = \"0.0.0.0:8080\"\n",
    );
    let out = command(dir.path())
        .args(["check-config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.listen") && err.contains("token"),
        "{err}"
    );
}

#[test]
fn before_anything_is_stored_search_finds_no_moments_and_tune_proposes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        "[snapshots]\nenabled = false\n\n[store]\nenabled = true\npath = \"store.sqlite\"\n\n\
         [http]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
    );
    // A camera that never delivers a frame: nothing is ever stored.
    let text = std::fs::read_to_string(&config).unwrap();
    let source = text.lines().find(|l| l.starts_with("source = ")).unwrap();
    let text = text
        .replace(source, "source = \"pipe:sleep 600\"")
        .replace("loop = true", "");
    std::fs::write(&config, text).unwrap();
    let d = start_with(dir.path(), &config);
    let found = json(&d, "/api/search?q=a+photo+of+a+red+circle");
    assert_eq!(found, serde_json::json!([]));
    let tune = json(&d, "/api/tune?q=a+photo+of+a+red+circle");
    assert_eq!(tune["frames"], 0);
    assert!(tune["threshold"].is_null(), "{tune}");
    assert!(
        tune["toml"]
            .as_str()
            .unwrap()
            .contains("no threshold proposed")
    );
    assert_eq!(json(&d, "/api/events"), serde_json::json!([]));
    assert_eq!(curl(&d, "/api/frame.jpg", false).0, 404);
}
