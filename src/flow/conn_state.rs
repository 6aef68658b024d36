//! Connection state in Zeek's `conn_state` vocabulary (S0, REJ, SF, S1, RSTO, ...), the
//! closest peer notion to "what happened to this connection" that flow logs lack: a
//! mirror target sees only accepted packets, so a refused connection is not a REJECT
//! action but a SYN answered by RST (REJ) or by nothing (S0).

use crate::parse::{Side, PROTO_TCP};

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// What each side of a connection has shown so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnTracker {
    /// The side that opened the connection (sender of the first packet, or the peer of
    /// a first-seen SYN-ACK).
    orig: Option<Side>,
    /// Per side: any packet, SYN without ACK, SYN-ACK, FIN, RST.
    seen: [SideSeen; 2],
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SideSeen {
    any: bool,
    syn: bool,
    synack: bool,
    fin: bool,
    rst: bool,
}

impl ConnTracker {
    pub fn observe(&mut self, side: Side, tcp_flags: u8) {
        if self.orig.is_none() {
            self.orig = Some(if tcp_flags & (SYN | ACK) == SYN | ACK {
                side.other()
            } else {
                side
            });
        }
        let s = &mut self.seen[side.index()];
        s.any = true;
        if tcp_flags & SYN != 0 {
            if tcp_flags & ACK != 0 {
                s.synack = true;
            } else {
                s.syn = true;
            }
        }
        s.fin |= tcp_flags & FIN != 0;
        s.rst |= tcp_flags & RST != 0;
    }

    /// The side that opened the connection.
    pub fn originator(&self) -> Side {
        self.orig.unwrap_or(Side::LoToHi)
    }

    /// Both sides sent FIN, or either sent RST: the connection is over.
    pub fn is_closed(&self) -> bool {
        let [a, b] = self.seen;
        (a.fin && b.fin) || a.rst || b.rst
    }

    pub fn state(&self, protocol: u8) -> &'static str {
        let o = self.originator();
        let orig = self.seen[o.index()];
        let resp = self.seen[o.other().index()];
        if protocol != PROTO_TCP {
            return if resp.any { "SF" } else { "S0" };
        }
        let opened = orig.syn;
        let accepted = resp.synack;
        match (opened, accepted) {
            (true, false) => {
                if resp.rst {
                    "REJ"
                } else if resp.any {
                    "OTH"
                } else if orig.rst {
                    "RSTOS0"
                } else if orig.fin {
                    "SH"
                } else {
                    "S0"
                }
            }
            (true, true) => {
                if orig.rst {
                    "RSTO"
                } else if resp.rst {
                    "RSTR"
                } else if orig.fin && resp.fin {
                    "SF"
                } else if orig.fin {
                    "S2"
                } else if resp.fin {
                    "S3"
                } else {
                    "S1"
                }
            }
            (false, true) => {
                if resp.rst {
                    "RSTRH"
                } else if resp.fin {
                    "SHR"
                } else {
                    "OTH"
                }
            }
            (false, false) => "OTH",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Side::*;

    fn run(pkts: &[(Side, u8)]) -> &'static str {
        let mut c = ConnTracker::default();
        for (s, f) in pkts {
            c.observe(*s, *f);
        }
        c.state(PROTO_TCP)
    }

    #[test]
    fn zeek_states() {
        assert_eq!(run(&[(LoToHi, SYN)]), "S0");
        assert_eq!(run(&[(LoToHi, SYN), (LoToHi, SYN)]), "S0");
        assert_eq!(run(&[(HiToLo, SYN), (LoToHi, RST | ACK)]), "REJ");
        let est = [(LoToHi, SYN), (HiToLo, SYN | ACK), (LoToHi, ACK)];
        assert_eq!(run(&est), "S1");
        let mut sf = est.to_vec();
        sf.extend([(LoToHi, FIN | ACK), (HiToLo, FIN | ACK), (LoToHi, ACK)]);
        assert_eq!(run(&sf), "SF");
        let mut rsto = est.to_vec();
        rsto.push((LoToHi, RST));
        assert_eq!(run(&rsto), "RSTO");
        assert_eq!(run(&[(LoToHi, ACK), (HiToLo, ACK)]), "OTH");
        assert_eq!(run(&[(HiToLo, SYN | ACK), (HiToLo, RST)]), "RSTRH");
    }

    #[test]
    fn udp_states() {
        let mut c = ConnTracker::default();
        c.observe(LoToHi, 0);
        assert_eq!(c.state(17), "S0");
        c.observe(HiToLo, 0);
        assert_eq!(c.state(17), "SF");
    }
}
