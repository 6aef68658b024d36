//! Sinks: where encoded records go: stdout or a file ([`RecordWriter`]), or rotating
//! gzip files in AWS's S3 layout (`files.rs`). One writer thread owns the sink; a record
//! counts as written only once flushed, and a write error (disk full, closed pipe) is
//! reported, never swallowed.

pub mod files;

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::record::{FlowRecord, RecordFormat};

/// Output destination.
pub enum Destination {
    Stdout,
    File(PathBuf),
}

/// Writes encoded records; owned by the writer thread.
pub struct RecordWriter {
    out: BufWriter<Box<dyn Write + Send>>,
    /// Parquet output goes here instead of `out`.
    parquet: Option<Box<crate::record::parquet::ParquetWriter>>,
    format: RecordFormat,
    line: String,
    /// Encoded chunks of large batches, emptied and kept for the next batch.
    spare_text: Vec<String>,
    /// CPU time the helper threads used.
    helper_cpu: std::time::Duration,
    written: u64,
    path: Option<PathBuf>,
}

/// Batches of at least this many records are encoded by two threads at once.
const SPLIT_ENCODE_MIN: usize = 8192;

/// Records per chunk of a batch encoded by two threads: small enough that the two
/// finish within ~0.2 ms of each other, large enough that handing chunks over costs
/// nothing measurable (~20 per window).
pub const ENCODE_CHUNK: usize = 2048;

/// Emptied chunk texts kept for the next chunks. The records are handed over faster
/// than they are encoded, so most chunks of a window are handed over before any text
/// comes back and start with a text of their own; keeping every one of those (~1 MB
/// each in JSON) held 38 MiB more at the peak of a 1M-flow flood. Two threads encode,
/// so a few texts serve a steady stream.
const SPARE_TEXTS: usize = 4;

impl RecordWriter {
    pub fn open(dest: &Destination, format: RecordFormat) -> io::Result<RecordWriter> {
        if format.kind() == crate::record::OutputKind::Parquet {
            let Destination::File(p) = dest else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "Parquet output needs --out FILE",
                ));
            };
            return Ok(RecordWriter {
                out: BufWriter::new(Box::new(io::sink())),
                parquet: Some(Box::new(crate::record::parquet::ParquetWriter::create(p)?)),
                format,
                line: String::new(),
                spare_text: Vec::new(),
                helper_cpu: Default::default(),
                written: 0,
                path: Some(p.clone()),
            });
        }
        let (w, path): (Box<dyn Write + Send>, _) = match dest {
            Destination::Stdout => (Box::new(io::stdout()), None),
            Destination::File(p) => (Box::new(File::create(p)?), Some(p.clone())),
        };
        Ok(RecordWriter {
            out: BufWriter::with_capacity(1 << 20, w),
            parquet: None,
            format,
            line: String::with_capacity(4096),
            spare_text: Vec::new(),
            helper_cpu: Default::default(),
            written: 0,
            path,
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn write_all(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        if let Some(p) = &mut self.parquet {
            p.write_all(records)?;
            self.written += records.len() as u64;
            return Ok(());
        }
        self.write_in_order(records.len(), |emit| {
            for chunk in records.chunks(ENCODE_CHUNK) {
                emit(chunk);
            }
        })
    }

    /// Whether [`Self::write_in_order`] can take records chunk by chunk (text and JSON
    /// lines can; Parquet takes a window's records whole, through `write_all`).
    pub fn encodes_in_chunks(&self) -> bool {
        self.parquet.is_none()
    }

    /// Writes `n` records that `produce` hands to the `emit` it is given in output
    /// order, a chunk at a time. For a large batch (a whole window: 47k records, ~7 ms
    /// of encoding) a helper thread encodes each chunk as soon as it is handed over,
    /// while `produce` goes on with the next on this thread; once `produce` is done,
    /// this thread encodes alongside the helper. The last window is written after the
    /// last packet, when the other core has nothing else to do, so what `produce` does
    /// (putting records in order, the detectors) no longer comes before all of the
    /// encoding. Each chunk's text is written as soon as every chunk before it is, so
    /// only a few chunks' text is held at once: holding a window's text until all of
    /// it was encoded (and every text for reuse after, see `SPARE_TEXTS`) put a
    /// 1M-flow flood in JSON, in windows of 200k records, at 572 MiB peak RSS, now 495.
    /// Text and JSON lines only (see [`Self::encodes_in_chunks`]).
    pub fn write_in_order<'a>(
        &mut self,
        n: usize,
        produce: impl FnOnce(&mut dyn FnMut(&'a [FlowRecord])),
    ) -> io::Result<()> {
        if self.parquet.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "Parquet output takes a window's records whole (write_all)",
            ));
        }
        let format = &self.format;
        if n < SPLIT_ENCODE_MIN {
            let line = &mut self.line;
            line.clear();
            produce(&mut |chunk| {
                for r in chunk {
                    format.write(r, line);
                }
            });
            self.out.write_all(self.line.as_bytes())?;
            self.written += n as u64;
            return Ok(());
        }
        self.out.flush()?;
        let handoff = Handoff::default();
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<(usize, String)>();
        let mut texts = InOrder {
            out: self.out.get_mut(),
            spare: &mut self.spare_text,
            chunks: Vec::new(),
            done: std::collections::BTreeMap::new(),
            next: 0,
            failed: None,
        };
        let helper_cpu = std::thread::scope(|s| {
            let helper = std::thread::Builder::new()
                .name("mf-encode".into())
                .spawn_scoped(s, || {
                    while let Some(job) = handoff.next() {
                        // The writer is gone only if it panicked; the job is then moot.
                        let _ = done_tx.send(job.encode(format));
                    }
                    crate::telemetry::thread_cpu_time()
                });
            // Closed also when `produce` panics: the helper then ends, and the scope
            // does not wait for it forever.
            let closer = CloseOnDrop(&handoff);
            produce(&mut |records| {
                texts.chunks.push(records);
                handoff.give(EncodeJob {
                    index: texts.chunks.len() - 1,
                    records,
                    text: texts.spare.pop().unwrap_or_default(),
                });
                texts.take_done(&done_rx);
            });
            drop(closer);
            // With no helper thread this takes every chunk.
            while let Some(job) = handoff.next() {
                let (index, text) = job.encode(format);
                texts.done.insert(index, text);
                texts.take_done(&done_rx);
            }
            let helper = helper.ok().and_then(|h| h.join().ok());
            texts.take_done(&done_rx);
            helper
        });
        self.helper_cpu += helper_cpu.unwrap_or_default();
        // Chunks a failed helper took are encoded again here: no record is lost.
        texts.finish(format)?;
        self.written += n as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    pub fn format(&self) -> &RecordFormat {
        &self.format
    }

    /// Writes lines this writer's format encoded earlier (`PendingWindow::append_encoded`),
    /// one record each, in the order given.
    pub fn write_lines<'a>(&mut self, lines: impl Iterator<Item = &'a [u8]>) -> io::Result<()> {
        if self.parquet.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "Parquet output takes records, not encoded lines",
            ));
        }
        for line in lines {
            self.out.write_all(line)?;
            self.written += 1;
        }
        Ok(())
    }

    /// CPU time the threads that encoded halves of large batches used.
    pub fn helper_cpu(&self) -> std::time::Duration {
        self.helper_cpu
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes everything; returns the number of records written.
    pub fn finish(mut self) -> io::Result<u64> {
        if let Some(p) = self.parquet.take() {
            p.finish()?;
        }
        self.out.flush()?;
        if let Some(p) = &self.path {
            // Records on disk survive a crash right after we report success.
            File::open(p).and_then(|f| f.sync_all()).ok();
        }
        Ok(self.written)
    }
}

/// One chunk of a batch, to be encoded into `text`.
struct EncodeJob<'a> {
    index: usize,
    records: &'a [FlowRecord],
    text: String,
}

impl EncodeJob<'_> {
    fn encode(mut self, format: &RecordFormat) -> (usize, String) {
        for r in self.records {
            format.write(r, &mut self.text);
        }
        (self.index, self.text)
    }
}

/// The encoded chunks of one batch on their way out: each is written once every chunk
/// before it is.
struct InOrder<'w, 'a> {
    out: &'w mut Box<dyn Write + Send>,
    /// Emptied texts, for the next chunks.
    spare: &'w mut Vec<String>,
    /// Every chunk handed over so far, by index.
    chunks: Vec<&'a [FlowRecord]>,
    /// Encoded chunks waiting for one before them.
    done: std::collections::BTreeMap<usize, String>,
    /// The chunk to write next.
    next: usize,
    /// The first write error: nothing is written after it, and it is returned.
    failed: Option<io::Error>,
}

impl InOrder<'_, '_> {
    /// Takes what the helper has encoded so far and writes what is now in order.
    fn take_done(&mut self, from: &crossbeam_channel::Receiver<(usize, String)>) {
        self.done.extend(from.try_iter());
        while let Some(text) = self.done.remove(&self.next) {
            self.write(text);
        }
    }

    fn write(&mut self, mut text: String) {
        if self.failed.is_none() {
            // Chunks of ~80 kB go straight to the output, not through its buffer.
            if let Err(e) = self.out.write_all(text.as_bytes()) {
                self.failed = Some(e);
            }
        }
        if self.spare.len() < SPARE_TEXTS {
            text.clear();
            self.spare.push(text);
        }
        self.next += 1;
    }

    /// Writes the chunks not written yet, encoding here any the helper took and never
    /// returned (it failed).
    fn finish(mut self, format: &RecordFormat) -> io::Result<()> {
        while self.next < self.chunks.len() {
            let text = match self.done.remove(&self.next) {
                Some(text) => text,
                None => {
                    EncodeJob {
                        index: self.next,
                        records: self.chunks[self.next],
                        text: self.spare.pop().unwrap_or_default(),
                    }
                    .encode(format)
                    .1
                }
            };
            self.write(text);
        }
        match self.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Chunks handed over for encoding, in order.
#[derive(Default)]
struct Handoff<'a> {
    state: std::sync::Mutex<HandoffState<'a>>,
    ready: std::sync::Condvar,
}

#[derive(Default)]
struct HandoffState<'a> {
    jobs: std::collections::VecDeque<EncodeJob<'a>>,
    /// No more chunks will come.
    closed: bool,
}

impl<'a> Handoff<'a> {
    fn give(&self, job: EncodeJob<'a>) {
        self.lock().jobs.push_back(job);
        self.ready.notify_one();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// The next chunk in order; waits while none is there and more may come. `None`
    /// once closed and empty.
    fn next(&self) -> Option<EncodeJob<'a>> {
        let mut state = self.lock();
        loop {
            let job = state.jobs.pop_front();
            if job.is_some() || state.closed {
                return job;
            }
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// A panic elsewhere while holding the lock leaves the queue itself intact.
    fn lock(&self) -> std::sync::MutexGuard<'_, HandoffState<'a>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Closes a handoff when dropped.
struct CloseOnDrop<'h, 'a>(&'h Handoff<'a>);

impl Drop for CloseOnDrop<'_, '_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// The sink of a `serve` run.
pub enum Sink {
    Stream(RecordWriter),
    Files {
        files: Box<files::RotatingFiles>,
        format: RecordFormat,
        line: String,
        written: u64,
    },
}

impl Sink {
    pub fn write_all(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        match self {
            Sink::Stream(w) => w.write_all(records),
            Sink::Files {
                files,
                format,
                line,
                written,
            } => {
                line.clear();
                for r in records {
                    format.write(r, line);
                }
                files.write_encoded(line.as_bytes())?;
                *written += records.len() as u64;
                Ok(())
            }
        }
    }

    /// Called about once a second: makes records visible (flush, time rotation).
    pub fn tick(&mut self) -> io::Result<()> {
        match self {
            Sink::Stream(w) => w.flush(),
            Sink::Files { files, .. } => files.tick(files::unix_now()),
        }
    }

    /// SIGHUP: complete the current file so the next write starts a new one.
    pub fn reopen(&mut self) -> io::Result<()> {
        match self {
            Sink::Stream(w) => w.flush(),
            Sink::Files { files, .. } => files.close(),
        }
    }

    pub fn written(&self) -> u64 {
        match self {
            Sink::Stream(w) => w.written(),
            Sink::Files { written, .. } => *written,
        }
    }

    /// Flushes and closes; returns the records written.
    pub fn finish(self) -> io::Result<u64> {
        match self {
            Sink::Stream(w) => w.finish(),
            Sink::Files {
                mut files, written, ..
            } => {
                files.close()?;
                Ok(written)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::LogStatus;

    /// A batch large enough to be encoded in chunks by two threads comes out exactly as
    /// encoding it record by record, in text and JSON, also the second time (with the
    /// first batch's buffers), and the helper's CPU time is counted.
    #[test]
    fn large_batches_encoded_by_two_threads_equal_one_by_one() {
        let records: Vec<FlowRecord> = (0..SPLIT_ENCODE_MIN as u64 + 1001)
            .map(|i| {
                let mut r = FlowRecord::status_only(None, Some(7), None, LogStatus::Ok, i, i + 1);
                r.srcaddr = std::net::IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
                r.dstaddr = "2001:db8::1".parse().unwrap();
                r.srcport = i as u16;
                r.packets = i;
                r
            })
            .collect();
        let dir = std::env::temp_dir().join(format!("mf-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for format in [RecordFormat::default_text(), RecordFormat::json()] {
            let path = dir.join("out");
            let mut w =
                RecordWriter::open(&Destination::File(path.clone()), format.clone()).unwrap();
            w.write_all(&records).unwrap();
            w.write_all(&records).unwrap();
            assert!(w.helper_cpu() > std::time::Duration::ZERO);
            assert_eq!(w.finish().unwrap(), 2 * records.len() as u64);
            let mut want = String::new();
            for r in records.iter().chain(&records) {
                format.write(r, &mut want);
            }
            assert!(std::fs::read_to_string(&path).unwrap() == want);
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Output that keeps what it is given, and fails from its `fail_at`th write on.
    #[derive(Clone)]
    struct Kept {
        bytes: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
        writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        fail_at: usize,
    }

    impl Write for Kept {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            use std::sync::atomic::Ordering;
            if self.writes.fetch_add(1, Ordering::Relaxed) + 1 >= self.fail_at {
                return Err(io::Error::other("disk full"));
            }
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Chunks encoded out of order are written in order as soon as the ones before
    /// them are, one the helper never returned is encoded at the end, and after a
    /// failed write nothing more is written and the error comes back.
    #[test]
    fn encoded_chunks_are_written_in_order_as_soon_as_they_can_be() {
        let records: Vec<FlowRecord> = (0..50u64)
            .map(|i| FlowRecord::status_only(None, Some(7), None, LogStatus::Ok, i, i + 1))
            .collect();
        let format = RecordFormat::default_text();
        let chunks: Vec<&[FlowRecord]> = records.chunks(10).collect();
        let encoded = |i: usize| {
            EncodeJob {
                index: i,
                records: chunks[i],
                text: String::new(),
            }
            .encode(&format)
            .1
        };
        for fail_at in [usize::MAX, 2] {
            let kept = Kept {
                bytes: Default::default(),
                writes: Default::default(),
                fail_at,
            };
            let mut out: Box<dyn Write + Send> = Box::new(kept.clone());
            let mut spare = Vec::new();
            let mut texts = InOrder {
                out: &mut out,
                spare: &mut spare,
                chunks: chunks.clone(),
                done: Default::default(),
                next: 0,
                failed: None,
            };
            let (tx, rx) = crossbeam_channel::unbounded();
            let written =
                |kept: &Kept| String::from_utf8(kept.bytes.lock().unwrap().clone()).unwrap();
            tx.send((2, encoded(2))).unwrap();
            texts.take_done(&rx);
            assert_eq!(written(&kept), "", "chunk 2 waits for 0 and 1");
            tx.send((0, encoded(0))).unwrap();
            tx.send((1, encoded(1))).unwrap();
            tx.send((4, encoded(4))).unwrap();
            texts.take_done(&rx);
            assert_eq!(texts.next, 3);
            assert_eq!(texts.done.len(), 1, "only chunk 4 is held");
            let result = texts.finish(&format);
            let want: String = (0..5).map(encoded).collect();
            if fail_at == usize::MAX {
                result.unwrap();
                assert_eq!(written(&kept), want);
            } else {
                assert_eq!(result.unwrap_err().to_string(), "disk full");
                assert_eq!(written(&kept), encoded(0), "nothing after the failed write");
            }
            // Chunk 3 was encoded into a text emptied before it: four texts in all, as
            // many as are kept.
            assert_eq!(spare.len(), SPARE_TEXTS.min(4));
        }
    }
}
