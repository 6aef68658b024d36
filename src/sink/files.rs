//! Rotating gzip files laid out as AWS delivers flow logs to S3 (aws-spec §2.11):
//! `AWSLogs/{account}/vpcflowlogs/{region}/{yyyy}/{mm}/{dd}/
//!  {account}_vpcflowlogs_{region}_{flow-log-id}_{yyyymmddTHHmmZ}_{hash}.log.gz`,
//! text files starting with a header line of field names.
//!
//! A file is written under a hidden `.partial` name and renamed into place only when
//! complete (rotation by age or size, SIGHUP, shutdown), after an fsync of the file and
//! its directory, so a reader listing the tree never sees half a file.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::config::SinkConfig;
use crate::record::{OutputKind, RecordFormat};

struct OpenFile {
    gz: GzEncoder<BufWriter<File>>,
    partial: PathBuf,
    final_path: PathBuf,
    opened_s: u64,
    bytes: u64,
}

pub struct RotatingFiles {
    cfg: SinkConfig,
    format: RecordFormat,
    current: Option<OpenFile>,
    /// Files completed so far (renamed into place).
    pub completed: Vec<PathBuf>,
    seq: u64,
}

impl RotatingFiles {
    pub fn new(cfg: SinkConfig, format: RecordFormat) -> io::Result<RotatingFiles> {
        fs::create_dir_all(&cfg.directory)?;
        Ok(RotatingFiles {
            cfg,
            format,
            current: None,
            completed: Vec::new(),
            seq: 0,
        })
    }

    /// Appends encoded lines, opening a file first if none is open.
    pub fn write_encoded(&mut self, lines: &[u8]) -> io::Result<()> {
        let now = unix_now();
        if self.current.is_none() {
            self.open(now)?;
        }
        if let Some(f) = &mut self.current {
            f.gz.write_all(lines)?;
            f.bytes += lines.len() as u64;
        }
        self.tick(now)
    }

    /// Closes the current file when it is old or large enough.
    pub fn tick(&mut self, now_s: u64) -> io::Result<()> {
        let due = self.current.as_ref().is_some_and(|f| {
            now_s >= f.opened_s + self.cfg.rotate_seconds || f.bytes >= self.cfg.rotate_bytes
        });
        if due {
            self.close()?;
        }
        Ok(())
    }

    /// Completes the current file (SIGHUP, shutdown).
    pub fn close(&mut self) -> io::Result<()> {
        let Some(f) = self.current.take() else {
            return Ok(());
        };
        let file = f.gz.finish()?.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        fs::rename(&f.partial, &f.final_path)?;
        if let Some(dir) = f.final_path.parent() {
            File::open(dir).and_then(|d| d.sync_all()).ok();
        }
        self.completed.push(f.final_path);
        Ok(())
    }

    fn open(&mut self, now_s: u64) -> io::Result<()> {
        let (y, m, d, hh, mm) = civil_time(now_s);
        let c = &self.cfg;
        let dir = c
            .directory
            .join("AWSLogs")
            .join(&c.account_id)
            .join("vpcflowlogs")
            .join(&c.region)
            .join(format!("{y:04}"))
            .join(format!("{m:02}"))
            .join(format!("{d:02}"));
        fs::create_dir_all(&dir)?;
        self.seq += 1;
        // AWS ends the name with a random hash; ours mixes process, file number and time,
        // so names never repeat within a run (or across restarts in the same minute).
        let hash = mix(mix(u64::from(std::process::id())) ^ mix(self.seq) ^ now_s) >> 32;
        let ext = match self.format.kind() {
            OutputKind::Text => "log.gz",
            OutputKind::Json | OutputKind::Parquet => "json.gz",
        };
        let name = format!(
            "{}_vpcflowlogs_{}_{}_{y:04}{m:02}{d:02}T{hh:02}{mm:02}Z_{hash:08x}.{ext}",
            c.account_id, c.region, c.flow_log_id
        );
        let final_path = dir.join(&name);
        if final_path.exists() {
            // Never replace a completed file: take the next number instead.
            return self.open(now_s);
        }
        let partial = dir.join(format!(".{name}.partial"));
        let mut gz = GzEncoder::new(
            BufWriter::new(File::create(&partial)?),
            Compression::default(),
        );
        let mut bytes = 0;
        if self.format.kind() == OutputKind::Text {
            let header = format!("{}\n", self.format.header_line());
            gz.write_all(header.as_bytes())?;
            bytes += header.len() as u64;
        }
        self.current = Some(OpenFile {
            gz,
            partial,
            final_path,
            opened_s: now_s,
            bytes,
        });
        Ok(())
    }
}

/// splitmix64's finaliser: a cheap bijective mix.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// (year, month, day, hour, minute) in UTC, from Unix seconds (Hinnant's civil_from_days).
pub fn civil_time(secs: u64) -> (i64, u32, u32, u32, u32) {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, (rem / 3600) as u32, (rem % 3600 / 60) as u32)
}

/// Every completed `.gz` file under `root`, sorted.
pub fn list_completed(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(list_completed(&p));
            } else if p.extension().is_some_and(|x| x == "gz") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn civil_time_known_dates() {
        assert_eq!(civil_time(0), (1970, 1, 1, 0, 0));
        assert_eq!(civil_time(1_704_067_200), (2024, 1, 1, 0, 0));
        assert_eq!(civil_time(1_709_210_096), (2024, 2, 29, 12, 34));
    }

    #[test]
    fn files_appear_whole_with_header_in_aws_layout() {
        let root = std::env::temp_dir().join(format!("mf-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let cfg = SinkConfig {
            kind: "files".into(),
            directory: root.clone(),
            account_id: "123456789012".into(),
            region: "eu-central-1".into(),
            rotate_bytes: 200,
            ..SinkConfig::default()
        };
        let mut f = RotatingFiles::new(cfg, RecordFormat::default_text()).unwrap();
        f.write_encoded(b"2 - - 10.0.0.1 10.0.0.2 1 2 6 1 40 1 1 ACCEPT OK\n")
            .unwrap();
        assert!(
            list_completed(&root).is_empty(),
            "no file is visible while being written"
        );
        f.write_encoded(&[b'x'; 300]).unwrap();
        assert_eq!(
            list_completed(&root).len(),
            1,
            "size rotation completes the file"
        );
        f.close().unwrap();
        let files = list_completed(&root);
        let name = files[0].to_string_lossy().into_owned();
        assert!(
            name.contains("AWSLogs/123456789012/vpcflowlogs/eu-central-1/"),
            "{name}"
        );
        assert!(
            name.contains("123456789012_vpcflowlogs_eu-central-1_fl-mirrorflow_"),
            "{name}"
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(&files[0]).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert!(text.starts_with("version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n2 - -"));
        let _ = fs::remove_dir_all(&root);
    }
}
