//! Runtime: thread topology of a run. `replay` is one ingest thread (read, decap, parse,
//! dispatch), N worker threads (flow tables) and one writer thread (sink), joined by
//! bounded channels, with an orderly shutdown: stop reading, drain tables, flush sink.

pub mod bench;
pub mod bench_serve;
pub mod replay;
pub mod send;
pub mod serve;
pub mod window;

pub use replay::{replay, stop_on_signals, ReplayError, ReplayOptions, ReplayOutcome};
