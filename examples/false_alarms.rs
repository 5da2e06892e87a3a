//! False alarms and found targets of the demo config on the generated clips (issue 24): the four
//! prompts of `firmware-config/demo.toml` with every default, replayed by the real daemon on
//! every frame of each clip, in the closed set of the first version (`matcher.vocabulary =
//! "none"`) and the open set (the default), and with a calibration file when one is given.
//! `benches/false-alarms.sh` runs it; prints one Markdown table row per clip and mode.
//!
//!   false_alarms [--edgeclip BIN] [--calibration FILE] RECIPE...

#[path = "../tests/common/scenes.rs"]
mod scenes;
#[path = "../tests/common/scoring.rs"]
mod scoring;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use edgeclip::event::{Event, EventKind};
use scenes::{Recipe, Truth, ensure};
use scoring::{false_starts, target_delays, visits};

const PROMPTS: [(&str, &str); 4] = [
    ("red_circle", "a photo of a red circle"),
    ("blue_square", "a photo of a blue square"),
    ("yellow_star", "a photo of a yellow star"),
    ("orange_triangle", "a photo of a orange triangle"),
];

fn run(bin: &Path, dir: &Path, clip: &Path, fps: u32, matcher: &str) -> Result<Vec<Event>> {
    let mut text = format!(
        "[camera]\nsource = \"files:{}/*.jpg\"\nfps = {fps}\nloop = false\n\n[model]\nbundle = \"{}\"\n\n[snapshots]\nenabled = false\n\n",
        clip.display(),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/demo")
            .display()
    );
    for (l, t) in PROMPTS {
        text += &format!("[[prompts]]\nlabel = \"{l}\"\ntext = \"{t}\"\n\n");
    }
    text += matcher;
    let config = dir.join("edgeclip.toml");
    std::fs::write(&config, text)?;
    let out = Command::new(bin)
        .args(["run", "--lossless", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("{\"type\":\"start\""))
        .filter_map(|l| Event::from_json(l).ok())
        .filter(|e| e.kind == EventKind::Start)
        .collect())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut bin = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/debug/edgeclip"
    ));
    let mut calibration = None;
    let mut recipes = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--edgeclip" => bin = args.next().context("--edgeclip BIN")?.into(),
            "--calibration" => calibration = Some(args.next().context("--calibration FILE")?),
            _ => recipes.push(Recipe::parse(&a).map_err(anyhow::Error::msg)?),
        }
    }
    let dir = tempfile::tempdir()?;
    let mut modes = vec![
        ("closed", "[matcher]\nvocabulary = \"none\"\n".to_string()),
        ("open", String::new()),
    ];
    if let Some(c) = &calibration {
        let c = std::fs::canonicalize(c)?;
        modes.push((
            "open + calibration",
            format!("[matcher]\ncalibration = \"{}\"\n", c.display()),
        ));
    }
    println!(
        "| clip | split | length | mode | false starts | false starts per hour | targets found (frames after entering) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for recipe in recipes {
        let clip = ensure(&recipe)?;
        let truth = Truth::load(&clip)?;
        let visits = visits(&truth);
        let seconds = truth.frames.len() as f64 / f64::from(truth.fps.max(1));
        for (mode, matcher) in &modes {
            let starts = run(&bin, dir.path(), &clip, truth.fps, matcher)?;
            let wrong = false_starts(&starts, &visits, &PROMPTS);
            let delays = target_delays(&starts, &visits, &PROMPTS);
            let found = delays.iter().filter(|(_, d)| d.is_some()).count();
            let worst = delays.iter().filter_map(|(_, d)| *d).max();
            println!(
                "| {} | {:?} | {:.0} s | {mode} | {} | {:.0} | {found} of {}{} |",
                recipe.name(),
                recipe.split(),
                seconds,
                wrong.len(),
                wrong.len() as f64 * 3600.0 / seconds,
                delays.len(),
                worst.map(|w| format!(", at most {w}")).unwrap_or_default()
            );
        }
    }
    Ok(())
}
