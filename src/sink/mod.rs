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
    written: u64,
    path: Option<PathBuf>,
}

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
        self.line.clear();
        for r in records {
            self.format.write(r, &mut self.line);
        }
        self.out.write_all(self.line.as_bytes())?;
        self.written += records.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
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
