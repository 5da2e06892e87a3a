//! The `edgeclip` binary as a service manager runs it: real signals (SIGHUP reloads the prompts,
//! SIGTERM ends the run with end events and exit code 0) and the on-disk prompt cache shared by
//! successive starts (`$CACHE_DIRECTORY`, which systemd's `CacheDirectory=` sets).

mod common;

use std::io::{BufRead, BufReader};
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
        let mut child = Command::new(env!("CARGO_BIN_EXE_edgeclip"))
            .args(["run", "--config"])
            .arg(config)
            .args(extra_args)
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
