//! mirrorflow: a traffic-mirroring packet inspection appliance.
//!
//! The crate follows the packet: `ingest` yields captured frames, `decap` strips the
//! VXLAN/GENEVE/VLAN wrapping AWS Traffic Mirroring adds, `parse` reads the inner packet
//! into a zero-copy view and a flow key, `dispatch` hashes that key symmetrically to one
//! worker, `flow` keeps per-worker tables that cut per-direction aggregation windows,
//! `record` turns them into AWS VPC Flow Log records and `sink` writes them. `runtime`
//! wires the stages into threads, `gen` makes synthetic mirror traffic with ground truth.

pub mod config;
pub mod decap;
pub mod detect;
pub mod dispatch;
pub mod dissect;
pub mod flow;
pub mod fuzzing;
pub mod gen;
pub mod ingest;
pub mod parse;
pub mod query;
pub mod record;
pub mod report;
pub mod runtime;
pub mod sink;
pub mod telemetry;
