//! The local web page and its JSON API (`[http]`): Live scores, Events, Search and Tune pages,
//! `/api/...` behind each, and `/metrics` in the Prometheus text format.
//!
//! axum's router, served by hyper on a current-thread tokio runtime in a thread of its own
//! (`edgeclip-http`), so the frame loop never waits for a client. What a client cannot do to it:
//! - hold every connection: at most `http.max_connections` are served at once; the accept
//!   loop takes no new one until a slot frees (the kernel's backlog holds the rest);
//! - stall it with a slow request: hyper drops a connection whose headers have not arrived in
//!   `http.header_timeout_s`, and every connection ends after `http.request_timeout_s`;
//! - send a large body: bodies over [`BODY_LIMIT`] are refused (every route is a GET);
//! - read it without the token (`http.token`): `Authorization: Bearer TOKEN` or `?token=TOKEN`,
//!   compared in constant time (`subtle`); 401 otherwise.
//!
//! The listener is bound when the daemon starts ([`Server::bind`]): a port in use is an error
//! naming `http.listen`, before the model loads. Work that blocks (the store, the text tower)
//! runs on tokio's blocking threads.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use log::{debug, info, warn};
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, oneshot};

use crate::config::HttpConfig;
use crate::prompts::PromptEmbedder;
use crate::store::Store;
use crate::store::moments::Moment;

mod api;
pub mod live;
pub mod metrics;
mod pages;

pub use live::{EventItem, LabelInfo, Live};

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 4096;

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The listen address cannot be bound.
    #[error("http.listen: cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The server's thread or runtime could not be started.
    #[error("http: cannot start the server: {0}")]
    Start(std::io::Error),
}

/// `edgeclip search`'s scoring ([`crate::search::search`]), passed in by the daemon: stored
/// frames between two times (of one camera) against a unit text embedding, merged into
/// moments with a gap, at most a limit, best first.
pub type SearchFn =
    fn(&Store, &[f32], i64, i64, Option<&str>, i64, usize) -> anyhow::Result<Vec<Moment>>;

/// What the Tune page needs to propose a threshold the way `edgeclip calibrate` does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TuneSettings {
    /// Frames at or above the threshold to start (`[trigger] enter_frames`).
    pub enter_frames: u32,
    /// Stored frames per second (`1 / store.sample_s`).
    pub fps: f64,
    /// False alarms a day aimed at.
    pub false_alarms_per_day: f64,
    /// The config scores with probabilities (`matcher.score = "prob"`): a cosine threshold
    /// does not apply as it is, and the TOML lines say so.
    pub prob_metric: bool,
}

/// Everything the handlers read.
pub struct AppState {
    /// The live state the frame loop writes.
    pub live: Arc<Live>,
    /// The token the page and API ask for.
    pub token: Option<String>,
    /// The store's file, when `[store]` is on.
    pub store: Option<PathBuf>,
    /// The snapshot folder, when snapshots are on (only files under it are served).
    pub snapshots: Option<PathBuf>,
    /// The model bundle's folder: its text tower is loaded at the first search.
    pub bundle: PathBuf,
    /// The text embedder, once loaded.
    pub embedder: Mutex<Option<PromptEmbedder>>,
    /// How stored frames are scored.
    pub search: SearchFn,
    /// Hits further apart than this (ms) are separate moments.
    pub gap_ms: i64,
    /// For the Tune page.
    pub tune: TuneSettings,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.store)
            .field("bundle", &self.bundle)
            .finish_non_exhaustive()
    }
}

/// A bound listener, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    config: HttpConfig,
}

/// A running server: dropping it (or [`Running::stop`]) stops it.
#[derive(Debug)]
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl Server {
    /// Binds `config.listen`; an error names the key.
    pub fn bind(config: &HttpConfig) -> Result<Server, HttpError> {
        let bind_err = |source| HttpError::Bind {
            addr: config.listen.clone(),
            source,
        };
        let addr = config.addr().ok_or_else(|| {
            bind_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not an IP:PORT address",
            ))
        })?;
        let listener = TcpListener::bind(addr).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        Ok(Server {
            listener,
            config: config.clone(),
        })
    }

    /// The address it listens on (the port picked when `listen` asked for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Starts serving `state` on a thread of its own.
    pub fn start(self, state: AppState) -> Result<Running, HttpError> {
        let addr = self.local_addr().ok_or_else(|| {
            HttpError::Start(std::io::Error::other("the listener has no address"))
        })?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .max_blocking_threads(4)
            .thread_name("edgeclip-http-blocking")
            .build()
            .map_err(HttpError::Start)?;
        let (stop, stopped) = oneshot::channel();
        let router = api::router(Arc::new(state));
        let config = self.config;
        let listener = self.listener;
        let thread = std::thread::Builder::new()
            .name("edgeclip-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => serve(l, router, &config, stopped).await,
                        Err(e) => warn!("http: the listener failed: {e}"),
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(HttpError::Start)?;
        info!("http: serving the web page on http://{addr}/");
        Ok(Running {
            stop: Some(stop),
            thread: Some(thread),
            addr,
        })
    }
}

impl Running {
    /// The address it serves.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, drops the open connections and joins the thread.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            warn!("http: the server thread panicked");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shut();
    }
}

/// The accept loop: a connection is taken only with a free slot, and served with hyper's
/// header timeout inside the overall connection timeout.
async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    config: &HttpConfig,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(config.max_connections as usize));
    let header_timeout = config.header_timeout();
    let request_timeout = config.request_timeout();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = &mut stopped => return,
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, do not spin.
                    warn!("http: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut stopped => return,
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(request_timeout, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => debug!("http: {peer}: {e}"),
                Err(_) => debug!("http: {peer}: connection closed after {request_timeout:?}"),
            }
            drop(permit);
        });
    }
}

/// The token a request carries: its `Authorization: Bearer` header, else its `token` query
/// parameter.
fn request_token(req: &Request) -> Option<String> {
    if let Some(h) = req.headers().get(axum::http::header::AUTHORIZATION)
        && let Ok(v) = h.to_str()
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_owned());
    }
    let query = req.uri().query()?;
    url_param(query, "token")
}

/// The first value of `name` in a query string, percent-decoded.
fn url_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find_map(|(k, v)| (k == name).then(|| v.into_owned()))
}

/// Refuses a request without the token (when one is set) with 401.
async fn require_token(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(expected) = &state.token {
        let given = request_token(&req).unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(axum::http::header::WWW_AUTHENTICATE, "Bearer")],
                "401: this page needs the token (http.token): add ?token=TOKEN to the address \
                 or send Authorization: Bearer TOKEN\n",
            )
                .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_found_and_decoded() {
        assert_eq!(
            url_param("a=1&token=x%2By+z", "token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(url_param("token", "token").as_deref(), Some(""));
        assert_eq!(url_param("tok=1", "token"), None);
    }
}
