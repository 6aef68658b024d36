//! Writes a generated capture in whole 2 MiB chunks at 2 MiB-aligned offsets.
//!
//! Why: how a file sits in the page cache decides what mapping it costs. Linux (6.x,
//! ext4 and others with large folios) caches a file in folios as large as the writes or
//! the read-ahead that brought it in; a 2 MiB folio at an aligned offset is mapped with
//! one page-table entry, a file cached in 8 KiB pieces costs an entry, a fault share
//! and an unmap per 4 KiB page. A capture read from disk comes in as large folios; one
//! written through an 8 KiB `BufWriter` and replayed while still cached did not, and
//! replaying it cost the ingest thread ~100 ns more per packet plus ~65 ms to unmap 1
//! GB (`mirrorflow bench`, 40k-flow capture). Writing in aligned 2 MiB chunks makes a
//! freshly generated capture look like one read from disk. The bytes written are the
//! same either way.

use std::io::{self, Write};

/// Size and alignment of each write.
pub const CHUNK: usize = 2 << 20;

/// A writer that passes on only full `CHUNK`s (and the remainder on `flush`), so every
/// write but the last starts at a multiple of `CHUNK` in the file.
pub struct ChunkWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> ChunkWriter<W> {
    pub fn new(out: W) -> Self {
        ChunkWriter {
            out,
            buf: Vec::with_capacity(CHUNK),
        }
    }
}

impl<W: Write> Write for ChunkWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let take = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() == CHUNK {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the length of every write it is given.
    #[derive(Default)]
    struct Writes {
        bytes: Vec<u8>,
        sizes: Vec<usize>,
    }

    impl Write for Writes {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.bytes.extend_from_slice(data);
            self.sizes.push(data.len());
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn passes_on_whole_chunks_then_the_rest_and_keeps_every_byte() {
        let mut w = ChunkWriter::new(Writes::default());
        let mut expect = Vec::new();
        // Pieces of awkward sizes (as pcap records are) straddling chunk boundaries.
        for i in 0..7_000u32 {
            let piece: Vec<u8> = (0..(i % 1_531) as usize)
                .map(|j| (i as usize + j) as u8)
                .collect();
            w.write_all(&piece).unwrap();
            expect.extend_from_slice(&piece);
        }
        w.flush().unwrap();
        let out = w.out;
        assert_eq!(out.bytes, expect);
        let (last, whole) = out.sizes.split_last().unwrap();
        assert!(whole.iter().all(|&s| s == CHUNK), "{:?}", out.sizes);
        assert_eq!(whole.len(), expect.len() / CHUNK);
        assert_eq!(*last, expect.len() % CHUNK);
    }
}
