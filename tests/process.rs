//! The `edgeclip` binary as a service manager runs it: real signals (SIGHUP reloads the prompts,
//! SIGTERM ends the run with end events and exit code 0), the on-disk prompt cache shared by
//! successive starts (`$CACHE_DIRECTORY`, which systemd's `CacheDirectory=` sets), systemd's
//! notification protocol on a real datagram socket (`$NOTIFY_SOCKET`: ready, watchdog,
//! stopping), and the panic policy (a panic on any thread ends the process).

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edgeclip::event::{Event, EventKind};
use edgeclip::model::Bundle;
use edgeclip::prompts::PromptEmbeddings;

/// A config replaying the test clip at `fps` (looping or not) with the given `[[prompts]]` tables.
fn config(fps: u32, looping: bool, prompts: &str) -> String {
    format!(
        "[camera]\nname = \"clip\"\nsource = \"files:{}\"\nfps = {fps}\nloop = {looping}\n\
         [model]\nbundle = \"{}\"\nthreads = 1\n{prompts}\
         [matcher]\nbackground = [\"an empty scene\"]\nthreshold = 0.5\nscore = \"prob\"\n\
         [trigger]\nenter_frames = 3\nexit_frames = 3\ncooldown_s = 0\n[events]\nstdout = true\n",
        common::data("clip/*.jpg").display(),
        common::root().join("models/demo").display()
    )
}

fn prompt(label: &str, text: &str) -> String {
    format!("[[prompts]]\nlabel = \"{label}\"\ntext = \"{text}\"\n")
}

/// One line the daemon wrote, from stdout (events) or stderr (the log).
enum Line {
    Out(String),
    Err(String),
}

/// Sends each line read from `stream` to `tx` as `kind(line)`, on a thread of its own.
fn forward_lines(
    stream: impl std::io::Read + Send + 'static,
    tx: mpsc::Sender<Line>,
    kind: fn(String) -> Line,
) {
    std::thread::spawn(move || {
        for l in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = tx.send(kind(l));
        }
    });
}

/// The daemon as a child process, its stdout and stderr read line by line on two threads.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<Line>,
    events: Vec<Event>,
    log: Vec<String>,
}

impl Daemon {
    fn start(config: &Path, cache: &Path, extra_args: &[&str]) -> Daemon {
        Daemon::start_with(config, cache, extra_args, &[])
    }

    /// As [`Daemon::start`], with more environment variables.
    fn start_with(
        config: &Path,
        cache: &Path,
        extra_args: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgeclip"))
            .args(["run", "--config"])
            .arg(config)
            .args(extra_args)
            .envs(env.iter().copied())
            .env("CACHE_DIRECTORY", cache)
            .env("STATE_DIRECTORY", cache.join("state"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting edgeclip");
        let (tx, lines) = mpsc::channel();
        forward_lines(child.stdout.take().unwrap(), tx.clone(), Line::Out);
        forward_lines(child.stderr.take().unwrap(), tx, Line::Err);
        Daemon {
            child,
            lines,
            events: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Reads lines until `done` holds for the daemon's output so far, or fails after `timeout`.
    fn wait_for(&mut self, what: &str, timeout: Duration, done: impl Fn(&Daemon) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.take(line),
                Err(_) => panic!(
                    "timed out waiting for {what}; log:\n{}\nevents: {:?}",
                    self.log.join("\n"),
                    self.events
                ),
            }
        }
    }

    fn take(&mut self, line: Line) {
        match line {
            // Statistics lines (`[stats]`) are not events.
            Line::Out(l) if l.starts_with("{\"type\":\"stats\"") => {}
            Line::Out(l) => self
                .events
                .push(Event::from_json(&l).unwrap_or_else(|e| panic!("stdout line {l:?}: {e}"))),
            Line::Err(l) => self.log.push(l),
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill")
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits for the process to exit (at most `timeout`), reads what is left of its output and
    /// returns its exit code.
    fn finish(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("edgeclip did not exit; log:\n{}", self.log.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader threads end at EOF, which closes the channel.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.take(line);
        }
        status.code().expect("exited, not killed by a signal")
    }

    fn logged(&self, needle: &str) -> bool {
        self.log.iter().any(|l| l.contains(needle))
    }

    fn events_of(&self, label: &str) -> Vec<(EventKind, u64)> {
        self.events
            .iter()
            .filter(|e| e.label == label)
            .map(|e| (e.kind, e.frame))
            .collect()
    }
}

/// SIGHUP while running: the rewritten config's new label fires. SIGTERM: every started label
/// gets its end event, and the exit code is 0.
#[test]
fn sighup_reloads_and_sigterm_ends_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgeclip.toml");
    let red = prompt("red", "a photo of a red circle");
    std::fs::write(&path, config(60, true, &red)).unwrap();
    let mut d = Daemon::start(&path, dir.path(), &[]);
    d.wait_for("the red circle's start", Duration::from_secs(60), |d| {
        !d.events_of("red").is_empty()
    });

    let blue = prompt("blue", "a photo of a blue square");
    std::fs::write(&path, config(60, true, &format!("{red}{blue}"))).unwrap();
    d.signal("HUP");
    d.wait_for("the reload", Duration::from_secs(30), |d| {
        d.logged("prompts reloaded: 2 labels")
    });
    // The blue square is on screen for 25 of the loop's 172 frames: it starts within one loop.
    d.wait_for("the blue square's start", Duration::from_secs(60), |d| {
        d.events_of("blue").first().map(|e| e.0) == Some(EventKind::Start)
    });
    // Stop while a label is active, so that the end event comes from the shutdown.
    d.wait_for("a label being active", Duration::from_secs(60), |d| {
        ["red", "blue"]
            .iter()
            .any(|l| d.events_of(l).last().map(|e| e.0) == Some(EventKind::Start))
    });
    d.signal("TERM");
    assert_eq!(d.finish(Duration::from_secs(30)), 0, "{}", d.log.join("\n"));

    for label in ["red", "blue"] {
        let kinds: Vec<EventKind> = d.events_of(label).iter().map(|e| e.0).collect();
        assert!(!kinds.is_empty(), "{label}: no events");
        // Strictly alternating start, end, start, end, ..., ending with an end.
        for (i, k) in kinds.iter().enumerate() {
            let want = if i % 2 == 0 {
                EventKind::Start
            } else {
                EventKind::End
            };
            assert_eq!(*k, want, "{label}: {kinds:?}");
        }
        assert_eq!(kinds.len() % 2, 0, "{label} left active: {kinds:?}");
    }
}

/// The first start embeds a text the bundle lacks and caches it, keyed by the bundle's
/// fingerprint; the second start takes it from the cache without running the text tower. To tell
/// a used cache from a recomputed one, the test then plants the red circle's shipped embedding
/// under that text: the second start must behave exactly like a config that asks for the red
/// circle by name.
#[test]
fn prompt_embeddings_are_cached_on_disk_between_starts() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let path = dir.path().join("edgeclip.toml");
    let replay = |text: &str, cache: &Path| {
        std::fs::write(&path, config(100, false, &prompt("blue", text))).unwrap();
        let mut d = Daemon::start(&path, cache, &["--lossless"]);
        assert_eq!(
            d.finish(Duration::from_secs(120)),
            0,
            "{}",
            d.log.join("\n")
        );
        d
    };

    // "a blue square" is not among the bundle's precomputed prompts.
    let first = replay("a blue square", &cache);
    assert!(
        first.logged("1 texts embedded by the text tower"),
        "{}",
        first.log.join("\n")
    );
    let bundle = Bundle::load(common::root().join("models/demo")).unwrap();
    let file = cache.join(format!("prompts-{}.safetensors", bundle.fingerprint()));
    let mut cached = PromptEmbeddings::load_for(&file, &bundle).unwrap();
    assert!(cached.get("a blue square").is_some(), "{:?}", cached.texts);

    // Plant the red circle's shipped embedding under the blue square's text.
    let shipped = PromptEmbeddings::load_for(&bundle.prompts_file().unwrap(), &bundle).unwrap();
    let red = shipped.get("a photo of a red circle").unwrap().to_vec();
    cached.insert("a blue square", red);
    cached.save(&file).unwrap();

    let second = replay("a blue square", &cache);
    assert!(
        second.logged("0 texts embedded by the text tower"),
        "{}",
        second.log.join("\n")
    );
    let by_name = replay("a photo of a red circle", &dir.path().join("another-cache"));
    assert!(
        !by_name.events_of("blue").is_empty(),
        "{:?}",
        by_name.events
    );
    assert_eq!(second.events_of("blue"), by_name.events_of("blue"));
    assert_ne!(second.events_of("blue"), first.events_of("blue"));
}

/// Reads notification datagrams from `socket` into `got` until `done` holds, or fails after
/// `timeout` naming what came.
fn notifications(
    socket: &UnixDatagram,
    got: &mut Vec<String>,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[String]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 4096];
    while !done(got) {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; notifications: {got:?}"
        );
        match socket.recv(&mut buf) {
            // One datagram may carry several lines (READY=1 and STATUS=...).
            Ok(n) => got.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("reading the notify socket: {e}"),
        }
    }
}

/// As systemd runs a `Type=notify` unit with `WatchdogSec=2`: the daemon says READY=1 (with a
/// status line), then pets the watchdog (WATCHDOG=1) from its frame loop, updates STATUS= and
/// says STOPPING=1 at SIGTERM, on the datagram socket `$NOTIFY_SOCKET` names.
#[test]
fn tells_the_service_manager_ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edgeclip.toml");
    let stats = "[stats]\ninterval_s = 1\n";
    let red = prompt("red", "a photo of a red circle");
    std::fs::write(&path, format!("{}{stats}", config(30, true, &red))).unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut d = Daemon::start_with(
        &path,
        dir.path(),
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.as_os_str()),
            ("WATCHDOG_USEC", "2000000".as_ref()),
        ],
    );
    let mut got = Vec::new();
    let count = |got: &[String], line: &str| got.iter().filter(|l| *l == line).count();
    notifications(
        &socket,
        &mut got,
        "READY=1 and three WATCHDOG=1",
        Duration::from_secs(120),
        |g| count(g, "READY=1") == 1 && count(g, "WATCHDOG=1") >= 3,
    );
    notifications(
        &socket,
        &mut got,
        "a status line with the frame rates",
        Duration::from_secs(60),
        |g| g.iter().any(|l| l.starts_with("STATUS=running: capture ")),
    );
    d.signal("TERM");
    notifications(
        &socket,
        &mut got,
        "STOPPING=1",
        Duration::from_secs(30),
        |g| count(g, "STOPPING=1") == 1,
    );
    assert_eq!(d.finish(Duration::from_secs(30)), 0, "{}", d.log.join("\n"));
    let at = |line: &str| got.iter().position(|l| l == line).unwrap();
    assert!(at("READY=1") < at("WATCHDOG=1"), "{got:?}");
    assert_eq!(
        got.last().map(String::as_str),
        Some("STATUS=stopping"),
        "{got:?}"
    );
    assert_eq!(count(&got, "READY=1"), 1, "{got:?}");
    assert!(
        got.iter().rposition(|l| l == "WATCHDOG=1").unwrap() < at("STOPPING=1"),
        "{got:?}"
    );
    assert!(d.logged("watchdog: 2.0 s"), "{}", d.log.join("\n"));
}

/// Set in the child process of [`a_panic_on_any_thread_ends_the_process`].
const PANIC_CHILD: &str = "EDGECLIP_TEST_PANIC_CHILD";

/// The binary's panic policy (`daemon::exit_on_panic`, installed by `main`): a panic on a
/// thread other than main ends the whole process with status 101, so that systemd restarts it.
/// The test runs itself again as a child process that installs the hook and panics on a thread.
#[test]
fn a_panic_on_any_thread_ends_the_process() {
    if std::env::var_os(PANIC_CHILD).is_some() {
        edgeclip::daemon::exit_on_panic();
        std::thread::Builder::new()
            .name("edgeclip-capture".into())
            .spawn(|| panic!("the camera driver returned nonsense"))
            .unwrap();
        // The hook ends the process long before this.
        std::thread::sleep(Duration::from_secs(60));
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_panic_on_any_thread_ends_the_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PANIC_CHILD, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(edgeclip::daemon::PANIC_EXIT),
        "{stderr}"
    );
    assert!(
        stderr.contains("thread 'edgeclip-capture'")
            && stderr.contains("panicked")
            && stderr.contains("the camera driver returned nonsense"),
        "{stderr}"
    );
}
