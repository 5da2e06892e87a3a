//! edgeclip: zero-shot camera events from a CLIP image encoder running under tract.
//!
//! The data flows one way:
//!
//! ```text
//! FrameSource -> Mailbox -> Preprocess -> Encoder (tract) -> Matcher -> Trigger -> EventSinks
//! ```
//!
//! Every stage but the sources, the encoder and the sinks is pure: it takes slices and
//! timestamps and does no I/O, so it is tested and benchmarked without hardware. The modules sit
//! in layers (plain data, pure core, engine, adapters, orchestration, the command line) and
//! import only downwards: `ARCHITECTURE.md`, at the root of the repository, draws the flow and
//! the module map, and `tests/architecture.rs` checks the rules.

pub mod bench;
pub mod calibration;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod event;
pub mod exemplar;
pub mod frame;
pub mod http;
pub mod log_limit;
pub mod mailbox;
pub mod matcher;
pub mod model;
pub mod paths;
pub mod plot;
pub mod preprocess;
pub mod prompts;
pub mod replay;
pub mod search;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod trigger;
