//! Capture files (pcap and pcapng) as a zero-copy stream of frames.
//!
//! The file is memory-mapped once and wrapped in a `bytes::Bytes`, so every frame is a
//! borrowed slice of the mapping and later stages can keep cheap `Bytes` handles to it.
//! Record framing is read with `pcap-parser` (classic pcap in both byte orders with µs, ns
//! and the "modified" variant; pcapng with several sections and interfaces, each with its
//! own link type and timestamp resolution). Damage is reported as a [`CaptureError`] that
//! names the file and the byte offset of the record that could not be read; the frames
//! before it have already been handed on, so nothing read so far is lost.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use pcap_parser::nom;
use pcap_parser::pcapng::{Block, SHB_MAGIC};
use pcap_parser::PcapError;

use super::readahead::ReadAhead;

/// Largest captured length we accept for one record. libpcap's own ceiling
/// (MAXIMUM_SNAPLEN, 262144) is used so a corrupt length field is reported as damage
/// instead of swallowing the rest of the file as one frame.
pub const MAX_CAPTURED_LEN: u32 = 262_144;

/// Link-layer header types we can decode (LINKTYPE_* numbers from tcpdump.org).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_RAW (101) and DLT_RAW (12, 14): the frame starts with an IPv4 or IPv6 header.
    Raw,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
    /// LINKTYPE_LINUX_SLL (113), Linux cooked capture v1.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276), Linux cooked capture v2.
    LinuxSll2,
    /// LINKTYPE_NULL (0): BSD loopback, 4-byte address family in the capturing host's order.
    Null,
    /// LINKTYPE_LOOP (108): OpenBSD loopback, address family in network order.
    Loop,
    /// LINKTYPE_PPP (9) and LINKTYPE_PPP_HDLC (50).
    Ppp,
    /// Anything else: counted and skipped by decap.
    Other(i32),
}

impl LinkType {
    pub fn from_linktype(n: i32) -> LinkType {
        match n {
            1 => LinkType::Ethernet,
            12 | 14 | 101 => LinkType::Raw,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            0 => LinkType::Null,
            108 => LinkType::Loop,
            9 | 50 => LinkType::Ppp,
            other => LinkType::Other(other),
        }
    }
}

/// One captured frame, borrowed from the mapped file.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Capture time in nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    pub link: LinkType,
    /// The captured bytes (possibly fewer than `orig_len`: snap length or mirror truncation).
    pub data: &'a [u8],
    /// Length of the frame on the wire, as the capture file records it.
    pub orig_len: u32,
    /// Byte offset of the frame's record in the file (for error messages).
    pub record_offset: usize,
}

/// Damage in a capture file: which file, where, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureError {
    pub path: PathBuf,
    pub offset: u64,
    pub detail: String,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: byte offset {}: {}",
            self.path.display(),
            self.offset,
            self.detail
        )
    }
}

impl std::error::Error for CaptureError {}

/// A memory-mapped capture file.
pub struct CaptureFile {
    path: PathBuf,
    data: Bytes,
}

impl CaptureFile {
    /// Maps `path` into memory. Errors name the file (offset 0).
    pub fn open(path: &Path) -> Result<CaptureFile, CaptureError> {
        let err = |detail: String| CaptureError {
            path: path.to_path_buf(),
            offset: 0,
            detail,
        };
        let file = File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
        let len = file
            .metadata()
            .map_err(|e| err(format!("cannot stat: {e}")))?
            .len();
        let data = if len == 0 {
            Bytes::new()
        } else {
            // SAFETY: the mapping is read-only and private; a capture file being
            // truncated under us would be a SIGBUS, the same risk tcpdump -r takes.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .map_err(|e| err(format!("cannot map: {e}")))?;
            Bytes::from_owner(map)
        };
        Ok(CaptureFile {
            path: path.to_path_buf(),
            data,
        })
    }

    /// Wraps bytes already in memory (tests, fuzzing).
    pub fn from_bytes(path: &Path, data: Bytes) -> CaptureFile {
        CaptureFile {
            path: path.to_path_buf(),
            data,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file; frames are sub-slices of it.
    pub fn bytes(&self) -> &Bytes {
        &self.data
    }

    /// Reads the file header and returns an iterator over the frames.
    pub fn frames(&self) -> Result<FrameIter<'_>, CaptureError> {
        FrameIter::new(&self.path, &self.data)
    }
}

#[derive(Clone, Copy, Debug)]
struct Interface {
    link: LinkType,
    /// Timestamp units per second (1e6 by default in pcapng).
    units_per_sec: u64,
    offset_secs: i64,
}

#[derive(Clone)]
enum Format {
    Pcap {
        big_endian: bool,
        nanos: bool,
        modified: bool,
        link: LinkType,
    },
    PcapNg {
        big_endian: bool,
        interfaces: Vec<Interface>,
    },
}

/// Iterator over the frames of a capture; yields `Err` once at the first damage, then ends.
#[derive(Clone)]
pub struct FrameIter<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
    format: Format,
    done: bool,
    readahead: ReadAhead,
}

const PCAP_HEADER_LEN: usize = 24;

/// A classic pcap timestamp in ns since the epoch; the fraction is µs, or ns in the
/// nanosecond variant.
#[inline(always)]
fn ts_ns(ts_sec: u32, ts_frac: u32, nanos: bool) -> u64 {
    let frac_ns = if nanos {
        u64::from(ts_frac)
    } else {
        u64::from(ts_frac) * 1_000
    };
    u64::from(ts_sec) * 1_000_000_000 + frac_ns
}

impl<'a> FrameIter<'a> {
    fn new(path: &'a Path, data: &'a [u8]) -> Result<FrameIter<'a>, CaptureError> {
        let err = |offset: usize, detail: String| CaptureError {
            path: path.to_path_buf(),
            offset: offset as u64,
            detail,
        };
        if data.len() < 4 {
            return Err(err(
                0,
                format!(
                    "not a capture file: {} bytes, too short for a magic number",
                    data.len()
                ),
            ));
        }
        let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        if magic == SHB_MAGIC {
            return Ok(FrameIter {
                path,
                data,
                pos: 0,
                format: Format::PcapNg {
                    big_endian: false,
                    interfaces: Vec::new(),
                },
                done: false,
                readahead: ReadAhead::new(),
            });
        }
        match pcap_parser::parse_pcap_header(data) {
            Ok((_, header)) => Ok(FrameIter {
                path,
                data,
                pos: PCAP_HEADER_LEN,
                format: Format::Pcap {
                    big_endian: header.is_bigendian(),
                    nanos: header.is_nanosecond_precision(),
                    modified: header.is_modified_format(),
                    link: LinkType::from_linktype(header.network.0),
                },
                done: false,
                readahead: ReadAhead::new(),
            }),
            Err(nom::Err::Incomplete(_)) => Err(err(
                0,
                format!(
                    "truncated pcap file header: {} of {PCAP_HEADER_LEN} bytes",
                    data.len()
                ),
            )),
            Err(_) => Err(err(
                0,
                format!("not a pcap or pcapng file: magic number 0x{magic:08x}"),
            )),
        }
    }

    fn damage(&mut self, detail: String) -> Option<Result<Frame<'a>, CaptureError>> {
        self.done = true;
        Some(Err(CaptureError {
            path: self.path.to_path_buf(),
            offset: self.pos as u64,
            detail,
        }))
    }

    #[inline(always)]
    fn next_pcap(
        &mut self,
        big_endian: bool,
        nanos: bool,
        modified: bool,
        link: LinkType,
    ) -> Option<Result<Frame<'a>, CaptureError>> {
        let rest = &self.data[self.pos..];
        if rest.is_empty() {
            return None;
        }
        if !modified {
            if let Some(frame) = self.whole_record(rest, big_endian, nanos, link) {
                return Some(Ok(frame));
            }
        }
        // Check the length field ourselves first: pcap-parser would wait for 4 GiB.
        if rest.len() >= 16 {
            let caplen = if big_endian {
                u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]])
            } else {
                u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]])
            };
            if caplen > MAX_CAPTURED_LEN {
                return self.damage(format!(
                    "pcap record header: incl_len {caplen} exceeds the {MAX_CAPTURED_LEN}-byte maximum"
                ));
            }
        }
        let parsed = if modified {
            pcap_parser::parse_pcap_frame_modified(rest)
        } else if big_endian {
            pcap_parser::parse_pcap_frame_be(rest)
        } else {
            pcap_parser::parse_pcap_frame(rest)
        };
        match parsed {
            Ok((remaining, block)) => {
                let record_offset = self.pos;
                self.pos = self.data.len() - remaining.len();
                Some(Ok(Frame {
                    ts_ns: ts_ns(block.ts_sec, block.ts_usec, nanos),
                    link,
                    data: block.data,
                    orig_len: block.origlen,
                    record_offset,
                }))
            }
            Err(e) => {
                let detail = describe(&e, "pcap record", rest.len());
                self.damage(detail)
            }
        }
    }

    /// A classic (unmodified) pcap record that `rest` holds whole, its captured length
    /// within bounds, read in place: the 16-byte header (ts_sec, ts_usec, incl_len,
    /// orig_len) and the frame after it. Anything else (a record cut short, an absurd
    /// length) is `None` and left to pcap-parser, which names the damage. Why not
    /// pcap-parser for every record: its parse is a call that returns a nom `IResult`
    /// the caller unpacks again; reading in place took 12 of the ingest thread's ~545
    /// instructions per packet off (callgrind). A test requires the same frames from
    /// both on every classic pcap of the corpus.
    #[inline(always)]
    fn whole_record(
        &mut self,
        rest: &'a [u8],
        big_endian: bool,
        nanos: bool,
        link: LinkType,
    ) -> Option<Frame<'a>> {
        let h: &[u8; 16] = rest.first_chunk()?;
        // All four fields in the file's byte order, swapped at most once per record.
        let mut fields = [0u32; 4];
        for (f, b) in fields.iter_mut().zip(h.chunks_exact(4)) {
            *f = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        if big_endian {
            fields = fields.map(u32::swap_bytes);
        }
        let [ts_sec, ts_frac, caplen, orig_len] = fields;
        if caplen > MAX_CAPTURED_LEN {
            return None;
        }
        let data = rest.get(16..16 + caplen as usize)?;
        let record_offset = self.pos;
        self.pos += 16 + caplen as usize;
        Some(Frame {
            ts_ns: ts_ns(ts_sec, ts_frac, nanos),
            link,
            data,
            orig_len,
            record_offset,
        })
    }

    fn next_pcapng(&mut self) -> Option<Result<Frame<'a>, CaptureError>> {
        loop {
            let rest = &self.data[self.pos..];
            if rest.is_empty() {
                return None;
            }
            let Format::PcapNg {
                big_endian,
                interfaces,
            } = &mut self.format
            else {
                return None;
            };
            let is_shb = rest.len() >= 4 && rest[..4] == SHB_MAGIC.to_le_bytes();
            let parsed = if is_shb {
                pcap_parser::parse_sectionheaderblock(rest)
                    .map(|(r, b)| (r, Block::SectionHeader(b)))
            } else if *big_endian {
                pcap_parser::parse_block_be(rest)
            } else {
                pcap_parser::parse_block_le(rest)
            };
            let (remaining, block) = match parsed {
                Ok(ok) => ok,
                Err(e) => {
                    let detail = describe(&e, "pcapng block", rest.len());
                    return self.damage(detail);
                }
            };
            let record_offset = self.pos;
            self.pos = self.data.len() - remaining.len();
            let step = match block {
                Block::SectionHeader(shb) => {
                    *big_endian = shb.big_endian();
                    // Interface ids are per section (pcapng spec 4.2).
                    interfaces.clear();
                    None
                }
                Block::InterfaceDescription(idb) => {
                    interfaces.push(Interface {
                        link: LinkType::from_linktype(idb.linktype.0),
                        units_per_sec: idb.ts_resolution().unwrap_or(1_000_000).max(1),
                        offset_secs: idb.ts_offset(),
                    });
                    None
                }
                Block::EnhancedPacket(epb) => Some(match interfaces.get(epb.if_id as usize) {
                    Some(iface) => {
                        let units = (u64::from(epb.ts_high) << 32) | u64::from(epb.ts_low);
                        let ns = (u128::from(units) * 1_000_000_000
                            / u128::from(iface.units_per_sec))
                            as i128
                            + i128::from(iface.offset_secs) * 1_000_000_000;
                        Ok(Frame {
                            ts_ns: ns.clamp(0, i128::from(u64::MAX)) as u64,
                            link: iface.link,
                            data: epb.data,
                            orig_len: epb.origlen,
                            record_offset,
                        })
                    }
                    None => Err(format!(
                        "enhanced packet block names interface {} but the section describes {}",
                        epb.if_id,
                        interfaces.len()
                    )),
                }),
                // SPBs belong to interface 0 and carry no timestamp.
                Block::SimplePacket(spb) => Some(match interfaces.first() {
                    Some(iface) => Ok(Frame {
                        ts_ns: 0,
                        link: iface.link,
                        data: spb.data,
                        orig_len: spb.origlen,
                        record_offset,
                    }),
                    None => Err("simple packet block before any interface description".to_string()),
                }),
                _ => None,
            };
            match step {
                None => continue,
                Some(Ok(frame)) => return Some(Ok(frame)),
                Some(Err(detail)) => {
                    self.pos = record_offset;
                    return self.damage(detail);
                }
            }
        }
    }
}

fn describe(e: &nom::Err<PcapError<&[u8]>>, what: &str, available: usize) -> String {
    match e {
        nom::Err::Incomplete(nom::Needed::Size(n)) => format!(
            "truncated {what}: {available} bytes left in the file, {} more needed",
            n.get()
        ),
        nom::Err::Incomplete(nom::Needed::Unknown) => {
            format!("truncated {what}: {available} bytes left in the file")
        }
        nom::Err::Error(e) | nom::Err::Failure(e) => format!("corrupt {what}: {e}"),
    }
}

impl<'a> Iterator for FrameIter<'a> {
    type Item = Result<Frame<'a>, CaptureError>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.readahead.advance(self.data, self.pos);
        match self.format {
            Format::Pcap {
                big_endian,
                nanos,
                modified,
                link,
            } => self.next_pcap(big_endian, nanos, modified, link),
            Format::PcapNg { .. } => self.next_pcapng(),
        }
    }
}

/// Every capture under `../shared/corpus` (pcap, pcapng, cap), sorted; `None`, with the
/// reason printed, when the corpus is not beside the repo (tests then skip).
#[cfg(test)]
pub(crate) fn corpus_captures() -> Option<Vec<PathBuf>> {
    fn under(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                under(&p, out);
            } else if p
                .extension()
                .is_some_and(|x| x == "pcap" || x == "pcapng" || x == "cap")
            {
                out.push(p);
            }
        }
    }
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    if !corpus.exists() {
        println!(
            "SKIP: {} not found (../shared beside the repo)",
            corpus.display()
        );
        return None;
    }
    let mut files = Vec::new();
    under(&corpus, &mut files);
    files.sort();
    Some(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic little-endian µs pcap with one 4-byte Ethernet-typed frame.
    fn tiny_pcap() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
        v.extend_from_slice(&0i32.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        v.extend_from_slice(&250_000u32.to_le_bytes());
        v.extend_from_slice(&4u32.to_le_bytes());
        v.extend_from_slice(&60u32.to_le_bytes());
        v.extend_from_slice(&[1, 2, 3, 4]);
        v
    }

    type FrameFacts = (u64, Vec<u8>, u32);

    fn frames_of(data: Vec<u8>) -> Vec<Result<FrameFacts, CaptureError>> {
        let cf = CaptureFile::from_bytes(Path::new("t.pcap"), Bytes::from(data));
        match cf.frames() {
            Ok(it) => it
                .map(|r| r.map(|f| (f.ts_ns, f.data.to_vec(), f.orig_len)))
                .collect(),
            Err(e) => vec![Err(e)],
        }
    }

    #[test]
    fn reads_a_classic_pcap_frame() {
        let got = frames_of(tiny_pcap());
        assert_eq!(
            got,
            vec![Ok((1_700_000_000_250_000_000, vec![1, 2, 3, 4], 60))]
        );
    }

    #[test]
    fn every_truncated_prefix_is_an_error_or_fewer_frames_never_a_panic() {
        let full = tiny_pcap();
        for cut in 0..full.len() {
            let got = frames_of(full[..cut].to_vec());
            if cut < PCAP_HEADER_LEN {
                assert!(got.len() == 1 && got[0].is_err(), "prefix {cut}");
                assert_eq!(got[0].as_ref().unwrap_err().offset, 0);
            } else if cut == PCAP_HEADER_LEN {
                assert!(got.is_empty(), "header only is a valid empty capture");
            } else {
                let err = got.last().unwrap().as_ref().unwrap_err();
                assert_eq!(err.offset, PCAP_HEADER_LEN as u64, "prefix {cut}");
                assert!(err.detail.contains("truncated"), "{}", err.detail);
            }
        }
    }

    #[test]
    fn absurd_incl_len_is_named() {
        let mut v = tiny_pcap();
        v[32..36].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        let got = frames_of(v);
        let err = got[0].as_ref().unwrap_err();
        assert!(err.detail.contains("incl_len"), "{}", err.detail);
        assert_eq!(err.offset, 24);
    }

    #[test]
    fn garbage_is_not_a_capture() {
        let got = frames_of(b"hello world, not a pcap".to_vec());
        assert!(got[0].as_ref().unwrap_err().detail.contains("magic"));
    }

    #[test]
    fn big_endian_nanosecond_pcap() {
        let mut v = Vec::new();
        v.extend_from_slice(&0xa1b2_3c4du32.to_be_bytes());
        v.extend_from_slice(&2u16.to_be_bytes());
        v.extend_from_slice(&4u16.to_be_bytes());
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(&65535u32.to_be_bytes());
        v.extend_from_slice(&101u32.to_be_bytes());
        v.extend_from_slice(&10u32.to_be_bytes());
        v.extend_from_slice(&7u32.to_be_bytes());
        v.extend_from_slice(&2u32.to_be_bytes());
        v.extend_from_slice(&2u32.to_be_bytes());
        v.extend_from_slice(&[9, 9]);
        let cf = CaptureFile::from_bytes(Path::new("be.pcap"), Bytes::from(v));
        let f: Vec<_> = cf.frames().unwrap().collect();
        let f = f[0].as_ref().unwrap();
        assert_eq!(f.ts_ns, 10_000_000_007);
        assert_eq!(f.link, LinkType::Raw);
    }
    /// The records of a classic pcap as pcap-parser reads them, one after another until
    /// the first it cannot read: (record offset, ts_ns, frame bytes, orig_len).
    fn pcap_parser_records(data: &[u8]) -> Vec<(usize, u64, Vec<u8>, u32)> {
        let Ok((_, header)) = pcap_parser::parse_pcap_header(data) else {
            return Vec::new();
        };
        let (be, nanos) = (header.is_bigendian(), header.is_nanosecond_precision());
        let mut pos = PCAP_HEADER_LEN;
        let mut out = Vec::new();
        loop {
            let rest = &data[pos..];
            let parsed = if header.is_modified_format() {
                pcap_parser::parse_pcap_frame_modified(rest)
            } else if be {
                pcap_parser::parse_pcap_frame_be(rest)
            } else {
                pcap_parser::parse_pcap_frame(rest)
            };
            let Ok((remaining, b)) = parsed else {
                return out;
            };
            if b.caplen > MAX_CAPTURED_LEN {
                return out;
            }
            out.push((
                pos,
                ts_ns(b.ts_sec, b.ts_usec, nanos),
                b.data.to_vec(),
                b.origlen,
            ));
            pos = data.len() - remaining.len();
        }
    }

    fn frame_iter_records(data: &[u8]) -> Vec<(usize, u64, Vec<u8>, u32)> {
        let cf = CaptureFile::from_bytes(Path::new("t.pcap"), Bytes::copy_from_slice(data));
        let Ok(frames) = cf.frames() else {
            return Vec::new();
        };
        frames
            .map_while(Result::ok)
            .map(|f| (f.record_offset, f.ts_ns, f.data.to_vec(), f.orig_len))
            .collect()
    }

    /// Records read in place (`whole_record`) are the records pcap-parser reads: on every
    /// classic pcap of the corpus, and on every prefix of the last few records of each
    /// (a record cut short must end the frames where pcap-parser stops too).
    #[test]
    fn records_read_in_place_equal_pcap_parser_on_corpus() {
        let Some(files) = corpus_captures() else {
            return;
        };
        let (mut captures, mut records) = (0, 0);
        for path in &files {
            let Ok(data) = std::fs::read(path) else {
                continue;
            };
            if data.len() < 4
                || u32::from_le_bytes([data[0], data[1], data[2], data[3]]) == SHB_MAGIC
            {
                continue; // pcapng: not read in place
            }
            let want = pcap_parser_records(&data);
            assert_eq!(frame_iter_records(&data), want, "{}", path.display());
            captures += 1;
            records += want.len();
            // Cut inside the last few records: header, frame, and the record boundary.
            for cut in data.len().saturating_sub(200)..data.len() {
                let prefix = &data[..cut];
                assert_eq!(
                    frame_iter_records(prefix).len(),
                    pcap_parser_records(prefix).len(),
                    "{} cut at {cut}",
                    path.display()
                );
            }
        }
        println!("{captures} classic pcaps, {records} records read alike");
        assert!(
            captures > 50 && records > 10_000,
            "{captures} captures, {records} records"
        );
    }
}
