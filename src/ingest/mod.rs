//! Ingest: where captured frames come from. Today that is capture files (pcap and pcapng,
//! memory-mapped); each source hands frames with their link type and timestamp to `decap`
//! without copying them.

pub mod capture_file;
pub mod readahead;
pub mod udp;

pub use capture_file::{CaptureError, CaptureFile, Frame, LinkType};
