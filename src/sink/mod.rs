//! Sinks: where encoded records go. Today stdout or a file, written by one writer thread
//! through a buffer; a record counts as written only once the buffer is flushed at the
//! end, and a write error (disk full, closed pipe) is reported, never swallowed.

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
    format: RecordFormat,
    line: String,
    written: u64,
    path: Option<PathBuf>,
}

impl RecordWriter {
    pub fn open(dest: &Destination, format: RecordFormat) -> io::Result<RecordWriter> {
        let (w, path): (Box<dyn Write + Send>, _) = match dest {
            Destination::Stdout => (Box::new(io::stdout()), None),
            Destination::File(p) => (Box::new(File::create(p)?), Some(p.clone())),
        };
        Ok(RecordWriter {
            out: BufWriter::with_capacity(1 << 20, w),
            format,
            line: String::with_capacity(4096),
            written: 0,
            path,
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn write_all(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        self.line.clear();
        for r in records {
            self.format.write(r, &mut self.line);
        }
        self.out.write_all(self.line.as_bytes())?;
        self.written += records.len() as u64;
        Ok(())
    }

    /// Flushes everything; returns the number of records written.
    pub fn finish(mut self) -> io::Result<u64> {
        self.out.flush()?;
        if let Some(p) = &self.path {
            // Records on disk survive a crash right after we report success.
            File::open(p).and_then(|f| f.sync_all()).ok();
        }
        Ok(self.written)
    }
}
