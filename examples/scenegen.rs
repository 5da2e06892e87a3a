//! Renders edgeclip's test material (the generator in `tests/common/scenes.rs`, described in
//! `tests/data/scenes.md`) for scripts and benches.
//!
//! ```text
//! scenegen list                                   the recipes of each split
//! scenegen distractors_temple_1 [--out DIR]       one recipe by name
//! scenegen quiet --bg raccoon --seed 3 --minutes 2 --fps 5
//! scenegen tuning | held-out | stress             every recipe of a set
//! ```
//!
//! A recipe goes to `target/scenes/<name>/` (or `--out DIR`) and is rendered only when that
//! folder has no `truth.json` yet (`--force` renders it again).

#[path = "../tests/common/scenes.rs"]
mod scenes;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use scenes::{Background, Recipe, RecipeKind};

#[derive(Parser)]
#[command(about = "Render edgeclip's test clips (tests/data/scenes.md)")]
struct Args {
    /// A recipe name (`distractors_temple_1`), a kind (distractors, quiet, targets, stills),
    /// `list`, `tuning`, `held-out` or `stress`.
    what: String,
    /// Background, with a kind.
    #[arg(long, default_value = "temple")]
    bg: String,
    /// Seed, with a kind.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Length in minutes.
    #[arg(long, conflicts_with = "seconds")]
    minutes: Option<f32>,
    /// Length in seconds.
    #[arg(long)]
    seconds: Option<f32>,
    /// Frames per second.
    #[arg(long)]
    fps: Option<u32>,
    /// The folder to render into (default: target/scenes/<name>/); one recipe only.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Render even if the folder is there.
    #[arg(long)]
    force: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let recipes = match args.what.as_str() {
        "list" => {
            for (split, set) in [
                ("tuning", scenes::tuning_set()),
                ("held-out", scenes::held_out_set()),
                ("stress (held out, reported apart)", scenes::stress_set()),
            ] {
                println!("{split}:");
                for r in set {
                    println!("  {:<28} {:>5} frames", r.name(), r.frames());
                }
            }
            println!(
                "backgrounds: {}",
                Background::ALL
                    .map(|b| format!("{} ({:?})", b.name(), b.split()))
                    .join(", ")
            );
            return Ok(());
        }
        "tuning" => scenes::tuning_set(),
        "held-out" => scenes::held_out_set(),
        "stress" => scenes::stress_set(),
        w => vec![recipe(w, &args)?],
    };
    if args.out.is_some() && recipes.len() > 1 {
        bail!("--out takes one recipe");
    }
    for r in recipes {
        let start = Instant::now();
        let dir = args
            .out
            .clone()
            .unwrap_or_else(|| scenes::scenes_root().join(r.name()));
        if !args.force && scenes::is_current(&dir) {
            println!("{}: already there -> {}", r.name(), dir.display());
            continue;
        }
        match &args.out {
            Some(out) => {
                std::fs::create_dir_all(out)?;
                r.render_to(out)?;
            }
            None => {
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)?;
                }
                scenes::ensure(&r)?;
            }
        }
        let s = start.elapsed().as_secs_f64();
        println!(
            "{}: {} frames, {:?}, {s:.1} s ({:.0} frames/s) -> {}",
            r.name(),
            r.frames(),
            r.split(),
            r.frames() as f64 / s,
            dir.display()
        );
    }
    Ok(())
}

fn recipe(what: &str, args: &Args) -> Result<Recipe> {
    let mut r = match RecipeKind::parse(what) {
        Some(kind) => {
            let bg = Background::parse(&args.bg)
                .ok_or_else(|| anyhow!("unknown background {}", args.bg))?;
            Recipe::new(kind, bg, args.seed)
        }
        None => Recipe::parse(what)
            .map_err(|e| anyhow!(e))
            .context("not a kind nor a recipe name")?,
    };
    if let Some(m) = args.minutes {
        r = r.with_seconds(m * 60.0);
    }
    if let Some(s) = args.seconds {
        r = r.with_seconds(s);
    }
    if let Some(f) = args.fps {
        r = r.with_fps(f);
    }
    Ok(r)
}
