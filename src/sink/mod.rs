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
    /// The second half of a large batch, encoded on a helper thread.
    rest: String,
    /// CPU time the helper threads used.
    helper_cpu: std::time::Duration,
    written: u64,
    path: Option<PathBuf>,
}

/// Batches of at least this many records are encoded in two halves at once.
const SPLIT_ENCODE_MIN: usize = 8192;

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
                rest: String::new(),
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
            rest: String::new(),
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
        self.line.clear();
        if records.len() >= SPLIT_ENCODE_MIN {
            // A whole window at once (47k records, ~14 ms of encoding): its second half
            // is encoded on a thread of its own. The last window is written after the
            // last packet, when the other core has nothing left to do.
            let (first, second) = records.split_at(records.len() / 2);
            let (format, line) = (&self.format, &mut self.line);
            let mut rest = std::mem::take(&mut self.rest);
            rest.clear();
            let rest = std::thread::scope(|s| {
                let helper = std::thread::Builder::new().spawn_scoped(s, || {
                    for r in second {
                        format.write(r, &mut rest);
                    }
                    (rest, crate::telemetry::thread_cpu_time())
                });
                for r in first {
                    format.write(r, line);
                }
                match helper {
                    Ok(h) => h.join().ok(),
                    Err(_) => None,
                }
            });
            let rest = match rest {
                Some((rest, cpu)) => {
                    self.helper_cpu += cpu;
                    rest
                }
                // No helper thread (or it failed): the second half is encoded here.
                None => {
                    let mut rest = String::new();
                    for r in second {
                        self.format.write(r, &mut rest);
                    }
                    rest
                }
            };
            self.out.write_all(self.line.as_bytes())?;
            self.out.write_all(rest.as_bytes())?;
            self.rest = rest;
        } else {
            for r in records {
                self.format.write(r, &mut self.line);
            }
            self.out.write_all(self.line.as_bytes())?;
        }
        self.written += records.len() as u64;
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
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

    /// A batch large enough to be encoded in two halves comes out exactly as encoding it
    /// record by record, in text and JSON, and the helper's CPU time is counted.
    #[test]
    fn large_batches_encoded_in_halves_equal_one_by_one() {
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
            assert!(w.helper_cpu() > std::time::Duration::ZERO);
            assert_eq!(w.finish().unwrap(), records.len() as u64);
            let mut want = String::new();
            for r in &records {
                format.write(r, &mut want);
            }
            assert!(std::fs::read_to_string(&path).unwrap() == want);
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
