//! The `[http]` table (the local web page, its JSON API and `/metrics`), read like every other
//! table of [`super::read`], in a file of its own so that `read.rs` stays under the size limit.
//! Its checks are here too: a listen address off the loopback needs a token, so the page is
//! never open to the network by accident.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::reader::{Reader, Section, key, resolve};
use super::secrets::{Password, PasswordOrigin};

/// `[http]`: the local web page (live scores, events, search, prompt tuning) and its API.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Serve the page.
    pub enabled: bool,
    /// `IP:PORT` to listen on, as written (checked to parse as a socket address).
    pub listen: String,
    /// The token the page and the API ask for (`token_file` else `token`); `Debug` hides it.
    pub token: Option<Password>,
    /// Connections served at once at most; more wait in the kernel's backlog.
    pub max_connections: u32,
    /// Seconds a client has to send a request's headers.
    pub header_timeout_s: f32,
    /// Seconds a request may take in all, and an idle connection may stay open.
    pub request_timeout_s: f32,
}

impl HttpConfig {
    /// `listen` as a socket address (`None` when it does not parse: the config check says so).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }

    /// `header_timeout_s` as a [`Duration`] (1 s if unusable).
    pub fn header_timeout(&self) -> Duration {
        Duration::try_from_secs_f32(self.header_timeout_s).unwrap_or(Duration::from_secs(1))
    }

    /// `request_timeout_s` as a [`Duration`] (1 s if unusable).
    pub fn request_timeout(&self) -> Duration {
        Duration::try_from_secs_f32(self.request_timeout_s).unwrap_or(Duration::from_secs(1))
    }
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            enabled: false,
            listen: "127.0.0.1:8080".into(),
            token: None,
            max_connections: 32,
            header_timeout_s: 5.0,
            request_timeout_s: 30.0,
        }
    }
}

/// Reads `[http]` from the root table (all its keys have defaults); `token_file` is resolved
/// against `base`, the config file's folder, and read here (a missing file is a problem of
/// `http.token_file`).
pub(super) fn read(r: &mut Reader, root: &mut Section, base: Option<&Path>) -> HttpConfig {
    let d = HttpConfig::default();
    let mut s = r.defaults_table(
        root,
        key(
            "http",
            "The local web page (Live scores, Events, Search, Tune), its JSON API (`/api/...`) \
             and `/metrics` in the Prometheus text format. Read at start-up.",
        ),
    );
    let enabled = r.or(
        &mut s,
        key("enabled", "Serve the web page and API."),
        d.enabled,
    );
    let listen = r.or(
        &mut s,
        key(
            "listen",
            "`IP:PORT` to listen on. The loopback by default; any other address needs `token` \
             or `token_file` (the daemon refuses to start without one). Port 0 picks a free \
             port (logged).",
        )
        .example("\"0.0.0.0:8080\""),
        d.listen,
    );
    let inline = r.opt::<String>(
        &mut s,
        key(
            "token",
            "The token the page and the API ask for: `Authorization: Bearer TOKEN` or \
             `?token=TOKEN` in the address (the page keeps it in its links). Prefer \
             `token_file`.",
        )
        .example("\"a-long-random-string\""),
    );
    let file = r
        .opt::<PathBuf>(
            &mut s,
            key(
                "token_file",
                "A file holding the token (not with `token`), its trailing line break ignored; \
                 an absolute path works with systemd's `LoadCredential=`.",
            )
            .example("\"http-token\""),
        )
        .map(|p| resolve(base, p));
    let token = match (inline, file) {
        (Some(_), Some(_)) => {
            r.problem(
                &s,
                "token_file",
                "give either http.token or http.token_file, not both",
            );
            None
        }
        (_, Some(file)) => match read_token_file(&file) {
            Ok(t) => Some(t),
            Err(m) => {
                r.problem(&s, "token_file", m);
                None
            }
        },
        (Some(text), None) => Some(Password::new(text, PasswordOrigin::Inline)),
        (None, None) => None,
    };
    let max_connections = r.or(
        &mut s,
        key(
            "max_connections",
            "Connections served at once at most; further clients wait until one closes.",
        ),
        d.max_connections,
    );
    let header_timeout_s = r.or(
        &mut s,
        key(
            "header_timeout_s",
            "Seconds a client has to send a request's headers; a slower one is disconnected.",
        ),
        d.header_timeout_s,
    );
    let request_timeout_s = r.or(
        &mut s,
        key(
            "request_timeout_s",
            "Seconds a connection may stay open at most (requests and keep-alive together).",
        ),
        d.request_timeout_s,
    );
    r.finish(s);
    HttpConfig {
        enabled,
        listen,
        token,
        max_connections,
        header_timeout_s,
        request_timeout_s,
    }
}

/// The token in `file`, without its trailing line break(s).
fn read_token_file(file: &Path) -> Result<Password, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("{}: cannot read the token file: {e}", file.display()))?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        return Err(format!("{}: the token file is empty", file.display()));
    }
    Ok(Password::new(text, PasswordOrigin::File(file.to_owned())))
}

/// `[http]`'s checks, pushed through `push(key, message)`; checked whether or not it is enabled
/// (a shipped config that turns it on later should not fail then).
pub(super) fn check(h: &HttpConfig, mut push: impl FnMut(&str, String)) {
    match h.addr() {
        None => push(
            "http.listen",
            format!(
                "{:?} is not an IP:PORT address (e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")",
                h.listen
            ),
        ),
        Some(a) if !a.ip().is_loopback() && h.token.is_none() => push(
            "http.listen",
            format!(
                "{a} is not a loopback address: set http.token_file (or http.token) so that \
                 the page is not open to anyone on the network"
            ),
        ),
        Some(_) => {}
    }
    if h.token.as_ref().is_some_and(|t| t.expose().len() < 8) {
        push("http.token", "must be at least 8 characters".into());
    }
    let mut range = |key: &str, v: f64, lo: f64, hi: f64| {
        if !(v >= lo && v <= hi) {
            push(key, format!("must be in [{lo}, {hi}], got {v}"));
        }
    };
    range(
        "http.max_connections",
        h.max_connections.into(),
        1.0,
        4096.0,
    );
    range(
        "http.header_timeout_s",
        h.header_timeout_s.into(),
        0.1,
        600.0,
    );
    range(
        "http.request_timeout_s",
        h.request_timeout_s.into(),
        0.1,
        3600.0,
    );
}
