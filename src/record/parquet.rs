//! Parquet output: records as AWS delivers flow logs in Parquet to S3, so Athena-style
//! tables read them: one column per field, named as AWS's Parquet DDL names them
//! (the field name with `_` for `-`: `account_id`, `log_status`, `tcp_flags`), typed as
//! aws-spec §2.4 lists (INT_32 ports/protocol/tcp-flags/version, INT_64 packets/bytes/
//! start/end, UTF-8 strings), every column optional (AWS's `-`). mirrorflow's enrichment
//! follows as extra columns. Rows are written in row groups of [`ROW_GROUP`].

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

use super::format::Value;
use super::{Field, FlowRecord, RecordFormat};

/// Records per row group.
pub const ROW_GROUP: usize = 65_536;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    I32,
    I64,
    Utf8,
}

/// Physical type of a field's column.
fn kind(f: Field) -> Kind {
    match f {
        Field::Version
        | Field::Srcport
        | Field::Dstport
        | Field::Protocol
        | Field::TcpFlags
        | Field::TrafficPath => Kind::I32,
        Field::HttpStatus | Field::DnsQtype | Field::DnsRcode | Field::TlsCipher => Kind::I32,
        Field::Packets
        | Field::Bytes
        | Field::Start
        | Field::End
        | Field::Vni
        | Field::TruncatedPackets
        | Field::HttpRequests => Kind::I64,
        _ => Kind::Utf8,
    }
}

/// Column name: the field name with underscores.
pub fn column_name(f: Field) -> String {
    f.name().replace('-', "_")
}

fn schema() -> String {
    let mut s = String::from("message flow_logs {\n");
    for f in Field::ALL {
        let t = match kind(*f) {
            Kind::I32 => "INT32",
            Kind::I64 => "INT64",
            Kind::Utf8 => "BYTE_ARRAY",
        };
        let ann = if kind(*f) == Kind::Utf8 {
            " (UTF8)"
        } else {
            ""
        };
        s.push_str(&format!("  OPTIONAL {t} {}{ann};\n", column_name(*f)));
    }
    s.push('}');
    s
}

pub struct ParquetWriter {
    writer: Option<SerializedFileWriter<File>>,
    pending: Vec<FlowRecord>,
    values: RecordFormat,
    written: u64,
}

fn err(e: parquet::errors::ParquetError) -> io::Error {
    io::Error::other(e.to_string())
}

impl ParquetWriter {
    pub fn create(path: &Path) -> io::Result<ParquetWriter> {
        let schema = Arc::new(parse_message_type(&schema()).map_err(err)?);
        let props = Arc::new(
            WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .set_created_by("mirrorflow".into())
                .build(),
        );
        let writer = SerializedFileWriter::new(File::create(path)?, schema, props).map_err(err)?;
        Ok(ParquetWriter {
            writer: Some(writer),
            pending: Vec::new(),
            values: RecordFormat::json(),
            written: 0,
        })
    }

    pub fn write_all(&mut self, records: &[FlowRecord]) -> io::Result<()> {
        self.pending.extend_from_slice(records);
        if self.pending.len() >= ROW_GROUP {
            self.flush_group()?;
        }
        Ok(())
    }

    fn flush_group(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        let mut rg = w.next_row_group().map_err(err)?;
        let mut i = 0;
        while let Some(mut col) = rg.next_column().map_err(err)? {
            let field = Field::ALL[i];
            i += 1;
            let vals: Vec<Option<Value<'_>>> = self
                .pending
                .iter()
                .map(|r| self.values.value(r, field))
                .collect();
            let defs: Vec<i16> = vals.iter().map(|v| i16::from(v.is_some())).collect();
            match kind(field) {
                Kind::I32 => {
                    let data: Vec<i32> = vals.iter().flatten().map(|v| num(v) as i32).collect();
                    col.typed::<Int32Type>()
                        .write_batch(&data, Some(&defs), None)
                        .map_err(err)?;
                }
                Kind::I64 => {
                    let data: Vec<i64> = vals.iter().flatten().map(|v| num(v) as i64).collect();
                    col.typed::<Int64Type>()
                        .write_batch(&data, Some(&defs), None)
                        .map_err(err)?;
                }
                Kind::Utf8 => {
                    let data: Vec<ByteArray> = vals
                        .iter()
                        .flatten()
                        .map(|v| ByteArray::from(text(v).as_str()))
                        .collect();
                    col.typed::<ByteArrayType>()
                        .write_batch(&data, Some(&defs), None)
                        .map_err(err)?;
                }
            }
            col.close().map_err(err)?;
        }
        rg.close().map_err(err)?;
        self.written += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Writes the last row group and the footer; returns the records written.
    pub fn finish(mut self) -> io::Result<u64> {
        self.flush_group()?;
        if let Some(w) = self.writer.take() {
            w.close().map_err(err)?;
        }
        Ok(self.written)
    }
}

fn num(v: &Value<'_>) -> u64 {
    match v {
        Value::Num(n) => *n,
        _ => 0,
    }
}

fn text(v: &Value<'_>) -> String {
    match v {
        Value::Str(s) => s.to_string(),
        Value::Text(s) => s.clone(),
        Value::Ip(ip) => ip.to_string(),
        Value::Num(n) => n.to_string(),
        Value::List(items) => items.join(","),
        Value::Findings(a, b) => crate::record::format::findings_json(a, b).to_string(),
    }
}

/// Reads a Parquet file of flow records (ours, or AWS's) as rows of column values.
pub fn read_rows(path: &Path) -> Result<Vec<Vec<(String, crate::query::value::Val)>>, String> {
    use crate::query::value::Val;
    use parquet::file::reader::SerializedFileReader;
    use parquet::record::Field as P;
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = SerializedFileReader::new(f)
        .map_err(|e| format!("{}: not a readable Parquet file: {e}", path.display()))?;
    let mut out = Vec::new();
    for row in reader {
        let row = row.map_err(|e| format!("{}: {e}", path.display()))?;
        let cols = row
            .get_column_iter()
            .map(|(name, v)| {
                let val = match v {
                    P::Null => Val::Null,
                    P::Int(n) => Val::Num(f64::from(*n)),
                    P::Long(n) => Val::Num(*n as f64),
                    P::Str(s) => Val::from_token(s),
                    P::Double(d) => Val::Num(*d),
                    other => Val::Str(other.to_string()),
                };
                (name.clone(), val)
            })
            .collect();
        out.push(cols);
    }
    Ok(out)
}
