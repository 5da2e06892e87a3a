//! Hard test material for edgeclip's triggers: camera-like clips of coloured shapes and clutter
//! on real photographs that the demo model never saw, with the truth of every frame.
//!
//! Why it exists: zero-shot triggers fire on distractors that share a colour or a shape with a
//! prompt, and tuning them needs clips made by a renderer that is not the one the demo model was
//! trained on (`models/tools/edgeclip_tools/demo/scenes.py`), on backgrounds it was not trained
//! on. This one is written from scratch in Rust: its own geometry, palette, scanline rasteriser,
//! lighting and noise, and its own backgrounds (`tests/data/backgrounds/`).
//!
//! Everything is a pure function of a [`Recipe`] (kind, background, seed, length, fps). Each
//! frame draws its randomness from its own stream (seed, frame), so frames render in any order,
//! on any number of threads, to the same bytes. [`ensure`] renders a recipe into
//! `target/scenes/<name>/` once (into a temporary folder, then renamed, so two test binaries
//! may ask at once). Recipes, the truth format and the split between tuning and held-out
//! material: `tests/data/scenes.md`.
#![allow(dead_code)]

use std::f32::consts::{PI, TAU};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use image::RgbImage;
use serde::{Deserialize, Serialize};

#[path = "scenes/draw.rs"]
mod draw;
use draw::{draw, prepare_background, sample_shifted};

/// Frame width of every clip (a 4:3 camera).
pub const W: u32 = 640;
/// Frame height of every clip.
pub const H: u32 = 480;
/// The side of the centred square the runtime keeps (resize shortest side, centre crop).
pub const VIEW: f32 = 480.0;
/// Where that square starts in a frame.
pub const VIEW_X0: f32 = (W as f32 - VIEW) / 2.0;
/// JPEG quality of written frames.
pub const JPEG_QUALITY: u8 = 85;
/// Seeds from this one on are held out on every background.
pub const HELD_OUT_SEEDS: u64 = 1000;

/// Pixels of background kept around the frame for the camera shake.
const MARGIN: usize = 12;
const BW: usize = W as usize + 2 * MARGIN;
const BH: usize = H as usize + 2 * MARGIN;
/// Sub-scanlines per pixel row of the rasteriser (coverage across a row is exact).
const SUB: usize = 8;

// ------------------------------------------------------------------------------ vocabulary

/// The demo model's colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Colour {
    Red,
    Green,
    Blue,
    Yellow,
    Orange,
    Purple,
    White,
    Black,
}

impl Colour {
    pub const ALL: [Colour; 8] = [
        Colour::Red,
        Colour::Green,
        Colour::Blue,
        Colour::Yellow,
        Colour::Orange,
        Colour::Purple,
        Colour::White,
        Colour::Black,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Yellow => "yellow",
            Colour::Orange => "orange",
            Colour::Purple => "purple",
            Colour::White => "white",
            Colour::Black => "black",
        }
    }

    pub fn parse(s: &str) -> Option<Colour> {
        Colour::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The paint under neutral light, sRGB 0..255 (this generator's own palette).
    pub fn rgb(self) -> [f32; 3] {
        match self {
            Colour::Red => [208.0, 34.0, 42.0],
            Colour::Green => [42.0, 158.0, 72.0],
            Colour::Blue => [32.0, 74.0, 206.0],
            Colour::Yellow => [236.0, 210.0, 44.0],
            Colour::Orange => [240.0, 128.0, 30.0],
            Colour::Purple => [128.0, 52.0, 168.0],
            Colour::White => [238.0, 238.0, 232.0],
            Colour::Black => [26.0, 26.0, 30.0],
        }
    }
}

/// The demo model's shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Star,
    Cross,
    Ring,
}

impl Shape {
    pub const ALL: [Shape; 6] = [
        Shape::Circle,
        Shape::Square,
        Shape::Triangle,
        Shape::Star,
        Shape::Cross,
        Shape::Ring,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Star => "star",
            Shape::Cross => "cross",
            Shape::Ring => "ring",
        }
    }

    pub fn parse(s: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// The prompt text of a combination, as the demo bundle spells it ("a photo of a orange ...").
pub fn prompt(colour: Colour, shape: Shape) -> String {
    format!("a photo of a {} {}", colour.name(), shape.name())
}

/// The four prompts of `firmware-config/demo.toml`: what the recipes call targets.
pub const DEMO_TARGETS: [(Colour, Shape); 4] = [
    (Colour::Red, Shape::Circle),
    (Colour::Blue, Shape::Square),
    (Colour::Yellow, Shape::Star),
    (Colour::Orange, Shape::Triangle),
];

/// The combinations held out of the demo model's training (its `HELD_OUT`), for analyses that
/// want to tell them apart; the recipes do not avoid them.
pub const DEMO_UNSEEN: [(Colour, Shape); 6] = [
    (Colour::Purple, Shape::Star),
    (Colour::Orange, Shape::Ring),
    (Colour::Green, Shape::Triangle),
    (Colour::White, Shape::Cross),
    (Colour::Yellow, Shape::Square),
    (Colour::Black, Shape::Circle),
];

/// The background prompt of the demo bundle.
pub const EMPTY_PROMPT: &str = "an empty scene";

/// Things that are no shape of the model's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clutter {
    /// An irregular grey lump (a stone, a bag).
    GreyBlob,
    /// A rounded rectangle of woven tan texture (a mat, cardboard).
    Patch,
    /// A pointed olive ellipse with a midrib.
    Leaf,
}

impl Clutter {
    pub const ALL: [Clutter; 3] = [Clutter::GreyBlob, Clutter::Patch, Clutter::Leaf];
}

/// What a visit shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Thing {
    Shape(Colour, Shape),
    Clutter(Clutter),
}

/// How a thing relates to the [`DEMO_TARGETS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// One of the target prompts.
    Target,
    /// Not a target, but shares its colour or its shape with one.
    Distractor,
    /// A combination that shares nothing with any target.
    Other,
    /// No shape of the vocabulary at all.
    Clutter,
}

/// One attribute a thing shares with a target prompt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub prompt: String,
    /// "colour" or "shape".
    pub attribute: String,
}

impl Thing {
    pub fn colour_name(self) -> &'static str {
        match self {
            Thing::Shape(c, _) => c.name(),
            Thing::Clutter(Clutter::GreyBlob) => "grey",
            Thing::Clutter(Clutter::Patch) => "tan",
            Thing::Clutter(Clutter::Leaf) => "olive",
        }
    }

    pub fn shape_name(self) -> &'static str {
        match self {
            Thing::Shape(_, s) => s.name(),
            Thing::Clutter(Clutter::GreyBlob) => "blob",
            Thing::Clutter(Clutter::Patch) => "patch",
            Thing::Clutter(Clutter::Leaf) => "leaf",
        }
    }

    /// The model's prompt for it; none for clutter.
    pub fn prompt(self) -> Option<String> {
        match self {
            Thing::Shape(c, s) => Some(prompt(c, s)),
            Thing::Clutter(_) => None,
        }
    }

    /// The target prompts it shares exactly one attribute with.
    pub fn shares(self) -> Vec<Share> {
        let Thing::Shape(c, s) = self else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (tc, ts) in DEMO_TARGETS {
            let attribute = match (tc == c, ts == s) {
                (true, false) => "colour",
                (false, true) => "shape",
                _ => continue,
            };
            out.push(Share {
                prompt: prompt(tc, ts),
                attribute: attribute.to_owned(),
            });
        }
        out
    }

    pub fn role(self) -> Role {
        match self {
            Thing::Clutter(_) => Role::Clutter,
            Thing::Shape(c, s) if DEMO_TARGETS.contains(&(c, s)) => Role::Target,
            t if t.shares().is_empty() => Role::Other,
            _ => Role::Distractor,
        }
    }
}

// ------------------------------------------------------------------------------ randomness

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const STREAM_SCRIPT: u64 = 1;
const STREAM_LOOK: u64 = 2;
const STREAM_SHAKE: u64 = 3;
const STREAM_NOISE: u64 = 4;
const STREAM_STILL: u64 = 5;

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// splitmix64: small, fast, good enough for pictures, and the same everywhere.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix64(seed))
    }

    /// An independent stream per (seed, purpose, index), e.g. the noise of one frame.
    pub fn stream(seed: u64, purpose: u64, index: u64) -> Rng {
        Rng(mix64(
            mix64(seed ^ purpose.wrapping_mul(GOLDEN)).wrapping_add(index),
        ))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix64(self.0)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / 16_777_216.0)
    }

    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    pub fn sign(&mut self) -> f32 {
        if self.next_u64() & 1 == 0 { 1.0 } else { -1.0 }
    }

    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())]
    }

    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i + 1);
            xs.swap(i, j);
        }
    }
}

// ----------------------------------------------------------------------------- backgrounds

/// Which material may be used to choose parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Tune on it: look at it, plot it, pick thresholds with it.
    Tuning,
    /// Never used to choose anything; only to report how the chosen parameters do.
    HeldOut,
}

/// The committed background photographs (`tests/data/backgrounds/README.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Background {
    /// A pagoda above a lake, trees, sky (scikit-learn's `china.jpg`).
    Temple,
    /// A raccoon in green leaves (SciPy's `face`).
    Raccoon,
    /// An orange dahlia on dark green foliage (scikit-learn's `flower.jpg`).
    Dahlia,
    /// Grace Hopper in uniform before a flag with stars (matplotlib's `grace_hopper.jpg`).
    Hopper,
}

impl Background {
    pub const ALL: [Background; 4] = [
        Background::Temple,
        Background::Raccoon,
        Background::Dahlia,
        Background::Hopper,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Background::Temple => "temple",
            Background::Raccoon => "raccoon",
            Background::Dahlia => "dahlia",
            Background::Hopper => "hopper",
        }
    }

    pub fn parse(s: &str) -> Option<Background> {
        Background::ALL.into_iter().find(|b| b.name() == s)
    }

    /// Temple and raccoon are for tuning; dahlia and hopper are held out, whatever the seed.
    pub fn split(self) -> Split {
        match self {
            Background::Temple | Background::Raccoon => Split::Tuning,
            Background::Dahlia | Background::Hopper => Split::HeldOut,
        }
    }

    /// A background the demo model cannot work on (hopper: it names the empty view a target,
    /// and red things on the face orange): outside the standard sets, in [`stress_set`].
    pub fn stress(self) -> bool {
        self == Background::Hopper
    }

    pub fn path(self) -> PathBuf {
        root()
            .join("tests/data/backgrounds")
            .join(format!("{}.jpg", self.name()))
    }

    pub fn load(self) -> io::Result<RgbImage> {
        let path = self.path();
        image::open(&path)
            .map(|i| i.to_rgb8())
            .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))
    }
}

/// The repository root: `$EDGECLIP_ROOT` when set, else the folder this was built from.
pub fn root() -> PathBuf {
    std::env::var_os("EDGECLIP_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Where [`ensure`] keeps rendered recipes: `$EDGECLIP_SCENES`, else `target/scenes`.
pub fn scenes_root() -> PathBuf {
    std::env::var_os("EDGECLIP_SCENES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/scenes"))
}

// --------------------------------------------------------------------------------- recipes

/// The kinds of material.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecipeKind {
    /// Two targets and seven distractors, one at a time (60 s at 15 fps).
    Distractors,
    /// Lighting, shadows, noise and now and then a non-target thing (10 min at 5 fps).
    Quiet,
    /// Each of the four targets once (20 s at 15 fps).
    Targets,
    /// One still per colour-shape combination and four empty ones.
    Stills,
}

impl RecipeKind {
    pub const ALL: [RecipeKind; 4] = [
        RecipeKind::Distractors,
        RecipeKind::Quiet,
        RecipeKind::Targets,
        RecipeKind::Stills,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RecipeKind::Distractors => "distractors",
            RecipeKind::Quiet => "quiet",
            RecipeKind::Targets => "targets",
            RecipeKind::Stills => "stills",
        }
    }

    pub fn parse(s: &str) -> Option<RecipeKind> {
        RecipeKind::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn default_seconds(self) -> f32 {
        match self {
            RecipeKind::Distractors => 60.0,
            RecipeKind::Quiet => 600.0,
            RecipeKind::Targets => 20.0,
            RecipeKind::Stills => 0.0,
        }
    }

    pub fn default_fps(self) -> u32 {
        match self {
            RecipeKind::Distractors | RecipeKind::Targets => 15,
            RecipeKind::Quiet => 5,
            RecipeKind::Stills => 0,
        }
    }
}

/// Everything a clip is a function of.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipe {
    pub kind: RecipeKind,
    pub bg: Background,
    pub seed: u64,
    /// Length (clips only).
    pub seconds: f32,
    /// Frames per second (clips only).
    pub fps: u32,
}

impl Recipe {
    pub fn new(kind: RecipeKind, bg: Background, seed: u64) -> Recipe {
        Recipe {
            kind,
            bg,
            seed,
            seconds: kind.default_seconds(),
            fps: kind.default_fps(),
        }
    }

    pub fn distractors(bg: Background, seed: u64) -> Recipe {
        Recipe::new(RecipeKind::Distractors, bg, seed)
    }

    pub fn quiet(bg: Background, seed: u64) -> Recipe {
        Recipe::new(RecipeKind::Quiet, bg, seed)
    }

    pub fn targets(bg: Background, seed: u64) -> Recipe {
        Recipe::new(RecipeKind::Targets, bg, seed)
    }

    pub fn stills(bg: Background, seed: u64) -> Recipe {
        Recipe::new(RecipeKind::Stills, bg, seed)
    }

    pub fn with_seconds(mut self, seconds: f32) -> Recipe {
        if self.kind != RecipeKind::Stills {
            self.seconds = seconds;
        }
        self
    }

    pub fn with_fps(mut self, fps: u32) -> Recipe {
        if self.kind != RecipeKind::Stills {
            self.fps = fps.max(1);
        }
        self
    }

    /// `<kind>_<background>_<seed>`, then `_<S>s` and `_<F>fps` where not the default.
    pub fn name(&self) -> String {
        let mut n = format!("{}_{}_{}", self.kind.name(), self.bg.name(), self.seed);
        if self.seconds != self.kind.default_seconds() {
            n += &format!("_{}s", self.seconds);
        }
        if self.fps != self.kind.default_fps() {
            n += &format!("_{}fps", self.fps);
        }
        n
    }

    /// The inverse of [`Recipe::name`].
    pub fn parse(name: &str) -> Result<Recipe, String> {
        let parts: Vec<&str> = name.split('_').collect();
        if parts.len() < 3 {
            return Err(format!(
                "{name}: expected <kind>_<background>_<seed>[_<S>s][_<F>fps]"
            ));
        }
        let kind = RecipeKind::parse(parts[0]).ok_or(format!("{name}: unknown kind"))?;
        let bg = Background::parse(parts[1]).ok_or(format!("{name}: unknown background"))?;
        let seed = parts[2].parse().map_err(|_| format!("{name}: bad seed"))?;
        let mut r = Recipe::new(kind, bg, seed);
        for p in &parts[3..] {
            if let Some(f) = p.strip_suffix("fps") {
                r = r.with_fps(f.parse().map_err(|_| format!("{name}: bad fps"))?);
            } else if let Some(s) = p.strip_suffix('s') {
                r = r.with_seconds(s.parse().map_err(|_| format!("{name}: bad length"))?);
            } else {
                return Err(format!("{name}: unknown part {p}"));
            }
        }
        Ok(r)
    }

    /// Held out when its background is, or its seed is [`HELD_OUT_SEEDS`] or more.
    pub fn split(&self) -> Split {
        if self.bg.split() == Split::HeldOut || self.seed >= HELD_OUT_SEEDS {
            Split::HeldOut
        } else {
            Split::Tuning
        }
    }

    pub fn frames(&self) -> u32 {
        match self.kind {
            RecipeKind::Stills => (Colour::ALL.len() * Shape::ALL.len()) as u32 + STILL_EMPTIES,
            _ => (self.seconds * self.fps as f32).round().max(1.0) as u32,
        }
    }

    /// The visits of a clip, in order (none for stills).
    pub fn script(&self) -> Vec<Visit> {
        let mut rng = Rng::stream(self.seed, STREAM_SCRIPT, self.kind as u64);
        let big = (0.24 * VIEW, 0.40 * VIEW);
        match self.kind {
            RecipeKind::Distractors => {
                let mut targets = DEMO_TARGETS;
                rng.shuffle(&mut targets);
                let mut things: Vec<Thing> = targets[..2]
                    .iter()
                    .map(|&(c, s)| Thing::Shape(c, s))
                    .collect();
                for (pool, n) in distractor_pools().into_iter().zip([2, 3, 2]) {
                    let mut pool = pool;
                    rng.shuffle(&mut pool);
                    things.extend(pool[..n].iter().map(|&(c, s)| Thing::Shape(c, s)));
                }
                rng.shuffle(&mut things);
                let visits = things
                    .into_iter()
                    .map(|t| Visit::random(&mut rng, t, big))
                    .collect();
                schedule(&mut rng, self.seconds, visits, (2.2, 3.2), 1.0)
            }
            RecipeKind::Targets => {
                let mut targets = DEMO_TARGETS;
                rng.shuffle(&mut targets);
                let visits = targets
                    .iter()
                    .map(|&(c, s)| Visit::random(&mut rng, Thing::Shape(c, s), big))
                    .collect();
                schedule(&mut rng, self.seconds, visits, (2.2, 3.2), 0.8)
            }
            RecipeKind::Quiet => {
                let others: Vec<(Colour, Shape)> = all_combos()
                    .filter(|cs| !DEMO_TARGETS.contains(cs))
                    .collect();
                let n = (self.seconds / 40.0).round().max(1.0) as usize;
                let visits = (0..n)
                    .map(|_| {
                        let thing = if rng.unit() < 0.4 {
                            Thing::Clutter(rng.pick(&Clutter::ALL))
                        } else {
                            let (c, s) = rng.pick(&others);
                            Thing::Shape(c, s)
                        };
                        Visit::random(&mut rng, thing, (0.2 * VIEW, 0.4 * VIEW))
                    })
                    .collect();
                schedule(&mut rng, self.seconds, visits, (2.0, 4.0), 3.0)
            }
            RecipeKind::Stills => Vec::new(),
        }
    }
}

const STILL_EMPTIES: u32 = 4;

/// Every colour-shape combination, colours first.
pub fn all_combos() -> impl Iterator<Item = (Colour, Shape)> {
    Colour::ALL
        .into_iter()
        .flat_map(|c| Shape::ALL.into_iter().map(move |s| (c, s)))
}

/// The distractors by what they share with the targets: only a colour (with one target, and a
/// shape no target has), only a shape (in a colour no target has), or a colour with one target
/// and the shape of another.
pub fn distractor_pools() -> [Vec<(Colour, Shape)>; 3] {
    let colours: Vec<Colour> = DEMO_TARGETS.iter().map(|t| t.0).collect();
    let shapes: Vec<Shape> = DEMO_TARGETS.iter().map(|t| t.1).collect();
    let mut pools = [Vec::new(), Vec::new(), Vec::new()];
    for (c, s) in all_combos().filter(|cs| !DEMO_TARGETS.contains(cs)) {
        match (colours.contains(&c), shapes.contains(&s)) {
            (true, false) => pools[0].push((c, s)),
            (false, true) => pools[1].push((c, s)),
            (true, true) => pools[2].push((c, s)),
            (false, false) => {}
        }
    }
    pools
}

/// The material to tune on: the tuning backgrounds with seeds below [`HELD_OUT_SEEDS`].
/// Each background has its own seeds (a seed fixes the visits, their timing and the light, so
/// one seed on two backgrounds is a controlled comparison, not more material).
pub fn tuning_set() -> Vec<Recipe> {
    let mut out = Vec::new();
    standard(&mut out, Background::Temple, 1, true);
    standard(&mut out, Background::Raccoon, 3, true);
    out
}

/// The material to report on: the held-out background dahlia, and held-out seeds on the
/// tuning backgrounds.
pub fn held_out_set() -> Vec<Recipe> {
    let mut out = Vec::new();
    standard(&mut out, Background::Dahlia, 1001, true);
    standard(&mut out, Background::Temple, 1003, false);
    standard(&mut out, Background::Raccoon, 1004, false);
    out
}

/// Held out too, reported apart: a background the demo model cannot work on
/// ([`Background::stress`]).
pub fn stress_set() -> Vec<Recipe> {
    let mut out = Vec::new();
    standard(&mut out, Background::Hopper, 1005, true);
    out
}

/// Distractors with `seed` (and `seed + 1` when `full`), targets and quiet with `seed`, and the
/// stills when `full`.
fn standard(out: &mut Vec<Recipe>, bg: Background, seed: u64, full: bool) {
    out.push(Recipe::distractors(bg, seed));
    if full {
        out.push(Recipe::distractors(bg, seed + 1));
    }
    out.push(Recipe::targets(bg, seed));
    out.push(Recipe::quiet(bg, seed));
    if full {
        out.push(Recipe::stills(bg, seed));
    }
}

// ---------------------------------------------------------------------------------- visits

/// The frame edge a visit enters or leaves by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Left,
    Right,
    Top,
    Bottom,
}

/// One thing's stay: it slides in, rests with a little wobble and rotation, slides out.
#[derive(Clone, Debug)]
pub struct Visit {
    pub thing: Thing,
    /// When it starts to slide in, seconds from the start of the clip.
    pub start: f32,
    /// When it has slid out.
    pub end: f32,
    /// How long each slide takes.
    pub slide: f32,
    /// Diameter of the circle that holds the shape at aspect 1, pixels.
    pub size: f32,
    /// Width over height of the shape before rotation (area kept).
    pub aspect: f32,
    /// Where it rests, in scene pixels (frame pixels without the camera shake).
    pub rest: [f32; 2],
    /// Where it glides to halfway through its stay, if anywhere (a crossing: [`Clip::crossing`]).
    pub to: Option<[f32; 2]>,
    pub enter: Side,
    pub exit: Side,
    /// Amplitudes, periods (s) and phases of the wobble, x then y.
    wobble: [f32; 6],
    angle0: f32,
    /// Slow turn (rad/s) and a rocking (amplitude rad, period s).
    spin: [f32; 3],
    /// Paint offset per channel.
    tint: [f32; 3],
    /// Direction and strength of the shading ramp across it.
    shade: [f32; 2],
    /// Drop shadow offset (fractions of the size) and darkness.
    shadow: [f32; 3],
    /// Seed of clutter forms and textures.
    form: u64,
}

/// Where a visit's thing is at a moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose {
    pub cx: f32,
    pub cy: f32,
    pub angle: f32,
}

impl Visit {
    fn random(rng: &mut Rng, thing: Thing, size: (f32, f32)) -> Visit {
        // log-uniform sizes
        let size = (rng.range(size.0.ln(), size.1.ln())).exp();
        let aspect = rng.range(-0.1, 0.1).exp();
        let ext = size / 2.0 * aspect.max(1.0 / aspect);
        let m = ext + 12.0;
        let rest = [
            rng.range(VIEW_X0 + m, VIEW_X0 + VIEW - m),
            rng.range(m, VIEW - m),
        ];
        let sides = [Side::Left, Side::Right, Side::Top, Side::Bottom];
        let shadow_dir = rng.range(0.0, TAU);
        let shadow_len = rng.range(0.03, 0.08);
        Visit {
            thing,
            start: 0.0,
            end: 0.0,
            slide: rng.range(0.45, 0.7),
            size,
            aspect,
            rest,
            enter: rng.pick(&sides),
            exit: rng.pick(&sides),
            wobble: [
                rng.range(3.0, 9.0),
                rng.range(2.0, 7.0),
                rng.range(1.6, 3.2),
                rng.range(2.0, 4.0),
                rng.range(0.0, TAU),
                rng.range(0.0, TAU),
            ],
            angle0: rng.range(0.0, TAU),
            spin: [
                rng.range(0.02, 0.12) * rng.sign(),
                rng.range(0.03, 0.1),
                rng.range(1.5, 3.0),
            ],
            tint: [
                rng.range(-14.0, 14.0),
                rng.range(-14.0, 14.0),
                rng.range(-14.0, 14.0),
            ],
            shade: [rng.range(0.0, TAU), rng.range(0.1, 0.35)],
            shadow: [
                shadow_len * shadow_dir.cos(),
                shadow_len * shadow_dir.sin(),
                rng.range(0.25, 0.45),
            ],
            form: rng.next_u64(),
            to: None,
        }
    }

    /// Radius of the disc that holds the thing, pixels.
    pub fn extent(&self) -> f32 {
        self.size / 2.0 * self.aspect.max(1.0 / self.aspect)
    }

    /// Where it is at time `t` (scene pixels), or `None` before it comes or after it went.
    pub fn pose(&self, t: f32) -> Option<Pose> {
        if t < self.start || t > self.end {
            return None;
        }
        let u = t - self.start;
        let w = &self.wobble;
        let rest = self.rest_at(t);
        let at = [
            rest[0] + w[0] * (TAU * u / w[2] + w[4]).sin(),
            rest[1] + w[1] * (TAU * u / w[3] + w[5]).sin(),
        ];
        let [cx, cy] = if u < self.slide {
            let from = self.offstage(self.enter, at);
            lerp2(from, at, ease(u / self.slide))
        } else if self.end - t < self.slide {
            let to = self.offstage(self.exit, at);
            lerp2(at, to, ease(1.0 - (self.end - t) / self.slide))
        } else {
            at
        };
        let angle = self.angle0 + self.spin[0] * u + self.spin[1] * (TAU * u / self.spin[2]).sin();
        Some(Pose { cx, cy, angle })
    }

    /// Where it rests at time `t`: `rest`, or for a crossing `rest` until it glides to `to` over
    /// the middle fifth of its stay.
    pub fn rest_at(&self, t: f32) -> [f32; 2] {
        let Some(to) = self.to else {
            return self.rest;
        };
        let (stay0, stay1) = (self.start + self.slide, self.end - self.slide);
        let glide = 0.2 * (stay1 - stay0);
        let from = stay0 + (stay1 - stay0 - glide) / 2.0;
        lerp2(self.rest, to, ease((t - from) / glide))
    }

    /// A point just outside the frame beyond `side`, level with `p`.
    fn offstage(&self, side: Side, p: [f32; 2]) -> [f32; 2] {
        let m = self.extent() * (1.0 + self.shadow[0].abs().max(self.shadow[1].abs())) + 8.0;
        match side {
            Side::Left => [-m, p[1]],
            Side::Right => [W as f32 + m, p[1]],
            Side::Top => [p[0], -m],
            Side::Bottom => [p[0], H as f32 + m],
        }
    }
}

fn ease(k: f32) -> f32 {
    0.5 - 0.5 * (PI * k.clamp(0.0, 1.0)).cos()
}

fn lerp2(a: [f32; 2], b: [f32; 2], k: f32) -> [f32; 2] {
    [a[0] + (b[0] - a[0]) * k, a[1] + (b[1] - a[1]) * k]
}

/// Places visits one after the other with random gaps that fill `seconds`: rests drawn from
/// `stay`, shrunk (down to 1.5 s) if they do not fit with `min_gap` between visits, and visits
/// dropped from the end only if even that does not fit.
fn schedule(
    rng: &mut Rng,
    seconds: f32,
    mut visits: Vec<Visit>,
    stay: (f32, f32),
    min_gap: f32,
) -> Vec<Visit> {
    let mut rests: Vec<f32> = visits.iter().map(|_| rng.range(stay.0, stay.1)).collect();
    let weights: Vec<f32> = (0..=visits.len()).map(|_| rng.range(0.6, 1.4)).collect();
    loop {
        let n = visits.len();
        let slides: f32 = visits.iter().map(|v| 2.0 * v.slide).sum();
        let room = seconds - slides - (n + 1) as f32 * min_gap;
        let want: f32 = rests.iter().sum();
        if n == 0 || room >= want {
            break;
        }
        if room >= 1.5 * n as f32 {
            let k = room / want;
            rests.iter_mut().for_each(|r| *r = (*r * k).max(1.5));
            continue;
        }
        visits.pop();
        rests.pop();
    }
    let busy: f32 = visits
        .iter()
        .zip(&rests)
        .map(|(v, r)| 2.0 * v.slide + r)
        .sum();
    let gaps = &weights[..=visits.len()];
    let total: f32 = gaps.iter().sum();
    let free = (seconds - busy - gaps.len() as f32 * min_gap).max(0.0);
    let mut t = 0.0;
    for (i, (v, r)) in visits.iter_mut().zip(&rests).enumerate() {
        t += min_gap + free * gaps[i] / total;
        v.start = t;
        v.end = t + 2.0 * v.slide + r;
        t = v.end;
    }
    visits
}

// ----------------------------------------------------------------------------------- truth

/// `truth.json` of a rendered recipe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Truth {
    pub recipe: String,
    /// [`generator_id`] of the code that rendered it.
    pub generator: String,
    pub background: String,
    pub seed: u64,
    pub split: Split,
    pub width: u32,
    pub height: u32,
    /// Frames per second; 0 for stills.
    pub fps: u32,
    /// The target prompts the roles refer to (`firmware-config/demo.toml`'s).
    pub prompts: Vec<String>,
    pub frames: Vec<FrameTruth>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrameTruth {
    pub frame: u32,
    pub file: String,
    /// Everything at least partly inside the frame (at most one thing in the clips).
    pub objects: Vec<ObjectTruth>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ObjectTruth {
    /// Index of the visit (0, 1, ...): the frames of one visit are one event.
    pub visit: usize,
    pub role: Role,
    pub colour: String,
    pub shape: String,
    /// "a photo of a {colour} {shape}"; null for clutter.
    pub prompt: Option<String>,
    /// Centre, frame pixels.
    pub cx: f32,
    pub cy: f32,
    /// Diameter of the circle that holds it at aspect 1, pixels.
    pub size: f32,
    /// The centre lies inside the runtime's view (the centred square) by a quarter of the size.
    pub in_view: bool,
    /// The target prompts it shares exactly one attribute with.
    pub shares: Vec<Share>,
}

impl Truth {
    pub fn load(dir: &Path) -> io::Result<Truth> {
        let text = fs::read_to_string(dir.join("truth.json"))?;
        serde_json::from_str(&text).map_err(io::Error::other)
    }
}

impl FrameTruth {
    /// The prompts of the objects in view (the old clip's `labels`).
    pub fn labels(&self) -> Vec<String> {
        self.objects
            .iter()
            .filter(|o| o.in_view)
            .filter_map(|o| o.prompt.clone())
            .collect()
    }
}

/// The ground-truth rule of `tests/data/clip/README.md`.
pub fn in_view(cx: f32, cy: f32, size: f32) -> bool {
    let m = size / 4.0;
    VIEW_X0 + m <= cx && cx <= VIEW_X0 + VIEW - m && m <= cy && cy <= VIEW - m
}

fn round1(x: f32) -> f32 {
    (x * 10.0).round() / 10.0
}

// ------------------------------------------------------------------------------------ look

/// The camera and the light of one clip.
#[derive(Clone, Debug)]
struct Look {
    /// Exposure: two slow sines (amplitude, period s, phase).
    exposure: [f32; 6],
    /// White balance drift per channel, and its period.
    wb: [f32; 4],
    /// A fixed light gradient: direction, strength.
    gradient: [f32; 2],
    /// The shadow band: direction, core width, softness, depth, speed (px/s), offset.
    band: [f32; 6],
    /// Camera shake: amplitudes, periods, phases.
    shake: [f32; 6],
    /// Noise sigma: luminance, per channel.
    noise: [f32; 2],
}

impl Look {
    fn random(rng: &mut Rng, seconds: f32) -> Look {
        let slow = seconds.clamp(20.0, 600.0);
        Look {
            exposure: [
                rng.range(0.05, 0.1),
                slow * rng.range(0.5, 1.0),
                rng.range(0.0, TAU),
                rng.range(0.02, 0.04),
                rng.range(7.0, 15.0),
                rng.range(0.0, TAU),
            ],
            wb: [
                rng.range(-0.03, 0.03),
                rng.range(-0.02, 0.02),
                rng.range(-0.03, 0.03),
                slow * rng.range(0.4, 0.9),
            ],
            gradient: [rng.range(0.0, TAU), rng.range(0.05, 0.25)],
            band: [
                rng.range(0.0, TAU),
                rng.range(50.0, 130.0),
                rng.range(40.0, 100.0),
                rng.range(0.2, 0.35),
                rng.range(12.0, 25.0),
                rng.range(0.0, 1.0),
            ],
            shake: [
                rng.range(0.8, 2.2),
                rng.range(0.6, 1.8),
                rng.range(2.5, 5.0),
                rng.range(3.0, 6.0),
                rng.range(0.0, TAU),
                rng.range(0.0, TAU),
            ],
            noise: [rng.range(1.5, 3.0), rng.range(0.8, 1.6)],
        }
    }

    fn exposure(&self, t: f32) -> f32 {
        let e = &self.exposure;
        1.0 + e[0] * (TAU * t / e[1] + e[2]).sin() + e[3] * (TAU * t / e[4] + e[5]).sin()
    }

    fn white_balance(&self, t: f32) -> [f32; 3] {
        let s = (TAU * t / self.wb[3]).sin();
        [
            1.0 + self.wb[0] * s,
            1.0 + self.wb[1] * s,
            1.0 + self.wb[2] * s,
        ]
    }
}

/// What lights one frame: a function of the pixel.
struct Light {
    exposure: f32,
    wb: [f32; 3],
    grad: [f32; 2],
    band_dir: [f32; 2],
    band_centre: f32,
    band_core: f32,
    band_soft: f32,
    band_depth: f32,
}

impl Light {
    fn at(&self, x: f32, y: f32) -> f32 {
        let g = 1.0 + self.grad[0] * (x / W as f32 - 0.5) + self.grad[1] * (y / H as f32 - 0.5);
        let d = (x * self.band_dir[0] + y * self.band_dir[1] - self.band_centre).abs();
        let k = ((d - self.band_core) / self.band_soft).clamp(0.0, 1.0);
        let shadow = self.band_depth * (1.0 - k * k * (3.0 - 2.0 * k));
        self.exposure * g * (1.0 - shadow)
    }
}

// ------------------------------------------------------------------------------------ clip

/// A recipe made ready to render: its visits, background and look.
pub struct Clip {
    pub recipe: Recipe,
    pub visits: Vec<Visit>,
    seed: u64,
    fps: f32,
    frames: u32,
    bg: Vec<f32>,
    look: Look,
}

impl Clip {
    /// A clip recipe (not stills: see [`render_still`] and [`Recipe::render_to`]).
    pub fn new(recipe: &Recipe) -> io::Result<Clip> {
        let visits = recipe.script();
        Clip::build(
            recipe.clone(),
            visits,
            recipe.seed,
            recipe.fps as f32,
            recipe.frames(),
        )
    }

    fn build(
        recipe: Recipe,
        visits: Vec<Visit>,
        seed: u64,
        fps: f32,
        frames: u32,
    ) -> io::Result<Clip> {
        let mut rng = Rng::stream(seed, STREAM_LOOK, 0);
        let photo = recipe.bg.load()?;
        let bg = prepare_background(&photo, &mut rng);
        let look = Look::random(&mut rng, frames as f32 / fps);
        Ok(Clip {
            recipe,
            visits,
            seed,
            fps,
            frames,
            bg,
            look,
        })
    }

    /// One still: `thing` (or nothing) resting on `bg`; render its frame [`STILL_FRAME`].
    pub fn still(bg: Background, thing: Option<Thing>, seed: u64) -> io::Result<Clip> {
        let index = match thing {
            Some(Thing::Shape(c, s)) => c as u64 * 8 + s as u64,
            Some(Thing::Clutter(k)) => 100 + k as u64,
            None => 200,
        };
        let stream = mix64(seed ^ mix64(index.wrapping_add(STREAM_STILL)));
        let mut rng = Rng::stream(stream, STREAM_SCRIPT, 0);
        let visits = thing
            .map(|t| {
                let mut v = Visit::random(&mut rng, t, (0.24 * VIEW, 0.40 * VIEW));
                v.slide = 0.5;
                v.end = 4.0;
                v
            })
            .into_iter()
            .collect();
        Clip::build(Recipe::stills(bg, seed), visits, stream, 1.0, 4)
    }

    /// One `thing` crossing the scene on `bg`: it slides in from the left, rests at `from`
    /// (scene pixels), glides to `to` halfway through its stay, rests there and slides out to the
    /// right; `seconds` long at `fps`, the visit from 1 s to `seconds - 1`. The recipe it carries
    /// is a targets recipe of the same length (for the light, the shake and the noise).
    pub fn crossing(
        bg: Background,
        seed: u64,
        thing: Thing,
        from: [f32; 2],
        to: [f32; 2],
        seconds: f32,
        fps: u32,
    ) -> io::Result<Clip> {
        let recipe = Recipe::targets(bg, seed)
            .with_seconds(seconds)
            .with_fps(fps);
        let mut rng = Rng::stream(seed, STREAM_SCRIPT, 99);
        let mut v = Visit::random(&mut rng, thing, (0.28 * VIEW, 0.32 * VIEW));
        v.rest = from;
        v.to = Some(to);
        v.enter = Side::Left;
        v.exit = Side::Right;
        v.start = 1.0;
        v.end = seconds - 1.0;
        let frames = recipe.frames();
        Clip::build(recipe, vec![v], seed, fps as f32, frames)
    }

    /// Renders every frame into `dir` as `frame_NNNN.jpg` (no `truth.json`: the caller knows
    /// what it asked for; [`Clip::poses`] says where the thing is in each frame).
    pub fn render_frames_to(&self, dir: &Path) -> io::Result<()> {
        self.write_frames(dir).map(|_| ())
    }

    pub fn frames(&self) -> u32 {
        self.frames
    }

    pub fn time(&self, f: u32) -> f32 {
        f as f32 / self.fps
    }

    /// The camera's offset at frame `f`: scene point p is at p - shake in the frame.
    pub fn shake(&self, f: u32) -> [f32; 2] {
        let t = self.time(f);
        let s = &self.look.shake;
        let mut rng = Rng::stream(self.seed, STREAM_SHAKE, f as u64);
        let lim = MARGIN as f32 - 2.0;
        [
            (s[0] * (TAU * t / s[2] + s[4]).sin() + rng.range(-0.4, 0.4)).clamp(-lim, lim),
            (s[1] * (TAU * t / s[3] + s[5]).sin() + rng.range(-0.4, 0.4)).clamp(-lim, lim),
        ]
    }

    /// The visits at least partly in frame `f`, posed in frame pixels.
    pub fn poses(&self, f: u32) -> Vec<(usize, Pose)> {
        let t = self.time(f);
        let [ox, oy] = self.shake(f);
        let mut out = Vec::new();
        for (i, v) in self.visits.iter().enumerate() {
            let Some(mut p) = v.pose(t) else { continue };
            p.cx -= ox;
            p.cy -= oy;
            let e = v.extent();
            if p.cx + e > 0.0 && p.cx - e < W as f32 && p.cy + e > 0.0 && p.cy - e < H as f32 {
                out.push((i, p));
            }
        }
        out
    }

    pub fn truth(&self, f: u32, file: String) -> FrameTruth {
        let objects = self
            .poses(f)
            .into_iter()
            .map(|(i, p)| {
                let v = &self.visits[i];
                ObjectTruth {
                    visit: i,
                    role: v.thing.role(),
                    colour: v.thing.colour_name().to_owned(),
                    shape: v.thing.shape_name().to_owned(),
                    prompt: v.thing.prompt(),
                    cx: round1(p.cx),
                    cy: round1(p.cy),
                    size: round1(v.size),
                    in_view: in_view(p.cx, p.cy, v.size),
                    shares: v.thing.shares(),
                }
            })
            .collect();
        FrameTruth {
            frame: f,
            file,
            objects,
        }
    }

    fn light(&self, f: u32) -> Light {
        let t = self.time(f);
        let b = &self.look.band;
        let dir = [b[0].cos(), b[0].sin()];
        // the band's coordinate runs over the frame's corners; it sweeps across and comes back
        let corners = [
            0.0,
            W as f32 * dir[0],
            H as f32 * dir[1],
            W as f32 * dir[0] + H as f32 * dir[1],
        ];
        let lo = corners.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = corners.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let pad = b[1] + b[2];
        let span = hi - lo + 2.0 * pad;
        let pos = (b[5] * span + b[4] * t).rem_euclid(span);
        Light {
            exposure: self.look.exposure(t),
            wb: self.look.white_balance(t),
            grad: [
                self.look.gradient[1] * self.look.gradient[0].cos(),
                self.look.gradient[1] * self.look.gradient[0].sin(),
            ],
            band_dir: dir,
            band_centre: lo - pad + pos,
            band_core: b[1] / 2.0,
            band_soft: b[2],
            band_depth: b[3],
        }
    }

    /// The light's gain per channel at a frame pixel (exposure, gradient, shadow band,
    /// white balance): what multiplies the paint.
    pub fn gain(&self, f: u32, x: f32, y: f32) -> [f32; 3] {
        let l = self.light(f);
        let g = l.at(x, y);
        [g * l.wb[0], g * l.wb[1], g * l.wb[2]]
    }

    /// Frame `f`; without its objects (and their shadows) when `with_objects` is false, the
    /// rest (background, light, noise) identical.
    pub fn render(&self, f: u32, with_objects: bool) -> RgbImage {
        let (w, h) = (W as usize, H as usize);
        let mut buf = vec![0f32; w * h * 3];
        let [ox, oy] = self.shake(f);
        sample_shifted(&self.bg, &mut buf, MARGIN as f32 + ox, MARGIN as f32 + oy);
        if with_objects {
            for (i, p) in self.poses(f) {
                draw(&mut buf, &self.visits[i], p);
            }
        }
        let light = self.light(f);
        let mut rng = Rng::stream(self.seed, STREAM_NOISE, f as u64);
        let [sl, sc] = self.look.noise;
        // triangular noise from two 16-bit fields, unit variance
        let tri = |r: u64, shift: u32| -> f32 {
            let a = ((r >> shift) & 0xffff) as f32 + ((r >> (shift + 16)) & 0xffff) as f32;
            (a / 65536.0 - 1.0) * 6f32.sqrt()
        };
        let mut out = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let g = light.at(x as f32 + 0.5, y as f32 + 0.5);
                let (r1, r2) = (rng.next_u64(), rng.next_u64());
                let luma = sl * tri(r1, 0);
                let chroma = [sc * tri(r1, 32), sc * tri(r2, 0), sc * tri(r2, 32)];
                let i = (y * w + x) * 3;
                for c in 0..3 {
                    let v = buf[i + c] * g * light.wb[c] + luma + chroma[c];
                    out[i + c] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        RgbImage::from_raw(W, H, out).expect("frame buffer size")
    }

    /// Renders every frame (on up to two threads) into `dir` as JPEG, then `truth.json`.
    fn write_frames(&self, dir: &Path) -> io::Result<Vec<FrameTruth>> {
        let digits = (self.frames.max(2) - 1).to_string().len().max(4);
        let name = |f: u32| format!("frame_{f:0digits$}.jpg");
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 2) as u32;
        std::thread::scope(|s| -> io::Result<()> {
            let jobs: Vec<_> = (0..threads)
                .map(|k| {
                    s.spawn(move || -> io::Result<()> {
                        for f in (k..self.frames).step_by(threads as usize) {
                            fs::write(dir.join(name(f)), encode_jpeg(&self.render(f, true)))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for j in jobs {
                j.join().expect("render thread")?;
            }
            Ok(())
        })?;
        Ok((0..self.frames).map(|f| self.truth(f, name(f))).collect())
    }
}

impl Recipe {
    /// Renders the recipe into `dir` (which must exist): frames, then `truth.json`.
    pub fn render_to(&self, dir: &Path) -> io::Result<Truth> {
        let frames = match self.kind {
            RecipeKind::Stills => {
                let mut frames = Vec::new();
                let things = all_combos()
                    .map(|(c, s)| Some(Thing::Shape(c, s)))
                    .chain((0..STILL_EMPTIES).map(|_| None));
                for (i, thing) in things.enumerate() {
                    let file = match thing {
                        Some(t) => format!("{}_{}.jpg", t.colour_name(), t.shape_name()),
                        None => format!("empty_{}.jpg", i - 48),
                    };
                    let clip = Clip::still(self.bg, thing, self.seed.wrapping_add(i as u64))?;
                    fs::write(
                        dir.join(&file),
                        encode_jpeg(&clip.render(STILL_FRAME, true)),
                    )?;
                    let mut t = clip.truth(STILL_FRAME, file);
                    t.frame = i as u32;
                    frames.push(t);
                }
                frames
            }
            _ => Clip::new(self)?.write_frames(dir)?,
        };
        let truth = Truth {
            recipe: self.name(),
            generator: generator_id(),
            background: self.bg.name().to_owned(),
            seed: self.seed,
            split: self.split(),
            width: W,
            height: H,
            fps: if self.kind == RecipeKind::Stills {
                0
            } else {
                self.fps
            },
            prompts: DEMO_TARGETS.iter().map(|&(c, s)| prompt(c, s)).collect(),
            frames,
        };
        let json = serde_json::to_string_pretty(&truth).map_err(io::Error::other)?;
        fs::write(dir.join("truth.json"), json)?;
        Ok(truth)
    }
}

/// The frame of a still clip that shows its thing at rest.
pub const STILL_FRAME: u32 = 2;

/// One frame of `colour` `shape` resting on `bg` (for exemplar images); pure function of its
/// arguments. Panics when the background file cannot be read.
pub fn render_still(bg: Background, colour: Colour, shape: Shape, seed: u64) -> RgbImage {
    Clip::still(bg, Some(Thing::Shape(colour, shape)), seed)
        .unwrap_or_else(|e| panic!("background {}: {e}", bg.name()))
        .render(STILL_FRAME, true)
}

pub fn encode_jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, JPEG_QUALITY)
        .encode(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("JPEG encoding to memory");
    out
}

// --------------------------------------------------------------------------------- on disk

static TEMP: AtomicU64 = AtomicU64::new(0);

/// Identifies this generator's code (FNV-1a of its two files): [`ensure`] renders a folder
/// made by other code again. (A changed background photo is not noticed: remove
/// `target/scenes`.)
pub fn generator_id() -> String {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    let code = [include_str!("scenes.rs"), include_str!("scenes/draw.rs")];
    for b in code.iter().flat_map(|c| c.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01B3);
    }
    format!("{h:016x}")
}

/// Whether `dir` holds a complete rendering by this code.
pub fn is_current(dir: &Path) -> bool {
    Truth::load(dir).is_ok_and(|t| t.generator == generator_id())
}

/// `target/scenes/<name>/`, rendered if it is not there yet.
pub fn ensure(recipe: &Recipe) -> io::Result<PathBuf> {
    ensure_in(&scenes_root(), recipe)
}

/// `root/<name>/`, rendered if it is not there yet (or was rendered by other code): into a
/// temporary folder beside it, then renamed, so a folder with a `truth.json` is always complete
/// and concurrent callers (threads or processes) each get it whole; the loser of a race drops
/// its copy.
pub fn ensure_in(root: &Path, recipe: &Recipe) -> io::Result<PathBuf> {
    let dir = root.join(recipe.name());
    if is_current(&dir) {
        return Ok(dir);
    }
    fs::create_dir_all(root)?;
    let tmp = root.join(format!(
        ".tmp-{}-{}-{}",
        recipe.name(),
        std::process::id(),
        TEMP.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp)?;
    if let Err(e) = recipe.render_to(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() && !is_current(&dir) {
        // rendered by other code (or an interrupted hand copy): replace it
        let _ = fs::remove_dir_all(&dir);
    }
    match fs::rename(&tmp, &dir) {
        Ok(()) => Ok(dir),
        Err(_) if is_current(&dir) => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(dir)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}
