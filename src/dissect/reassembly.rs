//! Bounded TCP stream reassembly for the first bytes of each direction.
//!
//! Keeps at most `limit` bytes in order from the start of the stream (the SYN's ISN, or
//! the first segment seen when the capture starts mid-connection). Retransmissions and
//! overlaps are trimmed against what is already held (first copy wins, as most stacks
//! and Suricata's default policy do), out-of-order segments wait in a small bounded
//! list, and a hole that is not filled in time, or a segment the mirror truncated, ends
//! the stream cleanly as a gap: the dissectors keep what came before it.

/// Out-of-order segments held per direction before the hole counts as a gap.
pub const MAX_PENDING_SEGMENTS: usize = 32;

const SYN: u8 = 0x02;

#[derive(Debug, Default)]
pub struct Stream {
    /// Sequence number of the next byte we expect.
    next_seq: Option<u32>,
    data: Vec<u8>,
    pending: Vec<(u32, Vec<u8>)>,
    /// The stream can no longer grow: a hole, a truncated segment, or the limit.
    pub ended: bool,
    /// A hole or truncation ended the stream (as opposed to the byte limit).
    pub gap: bool,
    limit: usize,
}

impl Stream {
    pub fn new(limit: usize) -> Stream {
        Stream {
            limit,
            ..Default::default()
        }
    }

    /// The contiguous bytes from the start of the stream.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Adds one segment; returns true when new in-order bytes arrived.
    pub fn segment(&mut self, seq: u32, flags: u8, payload: &[u8], truncated: bool) -> bool {
        if flags & SYN != 0 {
            // The SYN consumes one sequence number; data (TCP Fast Open) follows it. A
            // new SYN before any data is a new attempt with a new initial sequence.
            if self.data.is_empty() && self.pending.is_empty() {
                self.next_seq = Some(seq.wrapping_add(1));
            } else {
                self.next_seq.get_or_insert(seq.wrapping_add(1));
            }
            if payload.is_empty() {
                return false;
            }
            return self.segment(seq.wrapping_add(1), 0, payload, truncated);
        }
        if self.ended || payload.is_empty() {
            return false;
        }
        let next = *self.next_seq.get_or_insert(seq);
        let offset = seq.wrapping_sub(next) as i32;
        let grew = if offset <= 0 {
            let skip = offset.unsigned_abs() as usize;
            let grew = self.append(payload, skip);
            if truncated {
                // The mirror cut this segment: what follows it cannot be contiguous.
                self.end(true);
            }
            grew
        } else if self.pending.len() < MAX_PENDING_SEGMENTS && !truncated {
            // Copied (bounded: a few segments of at most `limit` bytes each) because the
            // packet's buffer belongs to its batch.
            let keep = payload.len().min(self.limit);
            self.pending.push((seq, payload[..keep].to_vec()));
            false
        } else {
            self.end(true);
            false
        };
        if grew {
            self.drain_pending();
        }
        grew
    }

    fn append(&mut self, payload: &[u8], skip: usize) -> bool {
        if skip >= payload.len() {
            return false; // a retransmission of bytes we hold
        }
        let room = self.limit.saturating_sub(self.data.len());
        let take = (payload.len() - skip).min(room);
        self.data.extend_from_slice(&payload[skip..skip + take]);
        if let Some(n) = &mut self.next_seq {
            *n = n.wrapping_add((payload.len() - skip) as u32);
        }
        if self.data.len() >= self.limit {
            self.end(false);
        }
        take > 0
    }

    fn drain_pending(&mut self) {
        loop {
            let Some(next) = self.next_seq else { return };
            let Some(i) = self
                .pending
                .iter()
                .position(|(s, _)| (s.wrapping_sub(next) as i32) <= 0)
            else {
                return;
            };
            let (s, p) = self.pending.swap_remove(i);
            let skip = next.wrapping_sub(s) as usize;
            self.append(&p, skip);
            if self.ended {
                return;
            }
        }
    }

    /// Marks the stream finished and frees what waits out of order.
    pub fn end(&mut self, gap: bool) {
        self.ended = true;
        self.gap |= gap;
        self.pending = Vec::new();
    }

    /// Frees the buffer once the dissectors are done with it.
    pub fn release(&mut self) {
        self.end(false);
        self.data = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn in_order_out_of_order_retransmitted_overlapping() {
        let mut s = Stream::new(1024);
        s.segment(1000, SYN, &[], false);
        s.segment(1001, 0x18, &b("GET "), false);
        s.segment(1008, 0x18, &b("HTTP"), false); // out of order
        assert_eq!(s.data(), b"GET ");
        s.segment(1001, 0x18, &b("GET "), false); // retransmission
        s.segment(1003, 0x18, &b("T /x "), false); // overlap: "T " held, "/x " new
        assert_eq!(s.data(), b"GET /x HTTP");
        assert!(!s.gap);
    }

    #[test]
    fn limit_and_gap_end_the_stream() {
        let mut s = Stream::new(4);
        s.segment(0, 0x18, &b("abcdef"), false);
        assert_eq!(s.data(), b"abcd");
        assert!(s.ended && !s.gap);
        let mut s = Stream::new(100);
        s.segment(0, 0x18, &b("ab"), true);
        s.segment(10, 0x18, &b("cd"), false);
        assert_eq!(s.data(), b"ab");
        assert!(s.gap);
    }

    #[test]
    fn too_many_pending_segments_is_a_gap() {
        let mut s = Stream::new(100_000);
        s.segment(0, 0x18, &b("a"), false);
        for i in 0..=MAX_PENDING_SEGMENTS as u32 {
            s.segment(100 + i * 10, 0x18, &b("x"), false);
        }
        assert!(s.ended && s.gap);
    }
}
