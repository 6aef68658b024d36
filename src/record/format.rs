//! Record encoding: AWS text (the default format or a custom `${field} ...` format, with
//! `-` for what is unknown, as AWS prints it) and JSON lines (AWS field names as keys,
//! unknown fields omitted, numbers as numbers).

use std::fmt::Write as _;

use super::default_line;
use super::fields::{FormatField, DEFAULT_FORMAT};
use super::{Field, FlowRecord, LogStatus};
use crate::dissect::{AppFacts, Finding};

/// Text, JSON lines, or Parquet (columns; see `record::parquet`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    Text,
    Json,
    Parquet,
}

/// A compiled output format.
#[derive(Clone, Debug)]
pub struct RecordFormat {
    kind: OutputKind,
    fields: Vec<FormatField>,
    /// `version`: the highest version among the chosen AWS fields (aws-spec §2.3).
    version: u8,
    /// AWS's default text format: most lines go through `default_line`.
    default_shape: bool,
}

/// Fields written as JSON keys: every field we compute, in registry order.
const JSON_FIELDS: &[Field] = Field::ALL;

impl RecordFormat {
    /// AWS's default text format (version 2).
    pub fn default_text() -> RecordFormat {
        RecordFormat::from_fields(
            OutputKind::Text,
            DEFAULT_FORMAT
                .iter()
                .map(|f| FormatField::Known(*f))
                .collect(),
        )
    }

    /// Every known field, as JSON lines or Parquet columns.
    pub fn json_as(kind: OutputKind) -> RecordFormat {
        RecordFormat::from_fields(
            kind,
            JSON_FIELDS.iter().map(|f| FormatField::Known(*f)).collect(),
        )
    }

    /// JSON lines with every known field.
    pub fn json() -> RecordFormat {
        RecordFormat::from_fields(
            OutputKind::Json,
            JSON_FIELDS.iter().map(|f| FormatField::Known(*f)).collect(),
        )
    }

    /// Compiles an AWS custom format string such as `${version} ${srcaddr} ${tcp-flags}`.
    /// Terraform's `$${field}` escaping is accepted too.
    pub fn custom(kind: OutputKind, spec: &str) -> Result<RecordFormat, String> {
        let mut fields = Vec::new();
        for token in spec.split_whitespace() {
            let inner = token
                .strip_prefix("$${")
                .or_else(|| token.strip_prefix("${"))
                .and_then(|t| t.strip_suffix('}'))
                .ok_or_else(|| {
                    format!("format token '{token}' is not of the form ${{field-name}}")
                })?;
            let field = FormatField::lookup(inner).ok_or_else(|| {
                format!(
                    "unknown field '{inner}' in format (known: {})",
                    Field::ALL
                        .iter()
                        .map(|f| f.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            fields.push(field);
        }
        if fields.is_empty() {
            return Err("format must name at least one field, e.g. '${srcaddr} ${dstaddr}'".into());
        }
        Ok(RecordFormat::from_fields(kind, fields))
    }

    fn from_fields(kind: OutputKind, fields: Vec<FormatField>) -> RecordFormat {
        let version = fields.iter().map(|f| f.version()).max().unwrap_or(2).max(2);
        let default_shape = kind == OutputKind::Text
            && fields.len() == DEFAULT_FORMAT.len()
            && fields
                .iter()
                .zip(DEFAULT_FORMAT)
                .all(|(f, d)| *f == FormatField::Known(*d));
        RecordFormat {
            kind,
            fields,
            version,
            default_shape,
        }
    }

    pub fn kind(&self) -> OutputKind {
        self.kind
    }

    pub fn version(&self) -> u8 {
        self.version
    }

    pub fn fields(&self) -> &[FormatField] {
        &self.fields
    }

    /// Whether records are written with their `findings`, the one field the detectors
    /// (`detect`) add to. When not, the detectors are not run: what they attach would
    /// be dropped unread (a twentieth of a flows-only replay's CPU, and half of it
    /// after the last packet, sealing the last window).
    pub fn prints_findings(&self) -> bool {
        self.fields
            .iter()
            .any(|f| matches!(f, FormatField::Known(Field::Findings)))
    }

    /// The header line AWS writes at the top of S3 text files: the field names.
    pub fn header_line(&self) -> String {
        self.fields
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Appends one encoded record and a newline to `out`.
    pub fn write(&self, r: &FlowRecord, out: &mut String) {
        match self.kind {
            OutputKind::Text => {
                if self.default_shape && default_line::write(self.version, r, out) {
                    return;
                }
                for (i, f) in self.fields.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    match f {
                        FormatField::Known(field) => {
                            if !self.write_text_direct(r, *field, out) {
                                match self.value(r, *field) {
                                    Some(v) => v.write_text(out),
                                    None => out.push('-'),
                                }
                            }
                        }
                        FormatField::Unknowable { .. } => out.push('-'),
                    }
                }
            }
            OutputKind::Json | OutputKind::Parquet => {
                out.push('{');
                let mut first = true;
                for f in &self.fields {
                    let FormatField::Known(field) = f else {
                        continue;
                    };
                    let Some(v) = self.value(r, *field) else {
                        continue;
                    };
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    out.push('"');
                    out.push_str(field.name());
                    out.push_str("\":");
                    v.write_json(out);
                }
                out.push('}');
            }
        }
        out.push('\n');
    }

    /// Writes the numbers, addresses and words of a flow record (every field of AWS's
    /// default format but the interface's ids) straight from the record, and says
    /// whether it did. Building a `Value` for each of them and matching on it again was
    /// half of the encoding time (~600 ns per default-format record). The text is the
    /// same as through `value`: `direct_text_is_the_text_of_the_value_for_every_field`
    /// compares both paths for every field.
    #[inline]
    fn write_text_direct(&self, r: &FlowRecord, field: Field, out: &mut String) -> bool {
        if r.log_status != LogStatus::Ok {
            return false;
        }
        match field {
            Field::Version => push_u64(out, u64::from(self.version)),
            Field::Srcaddr | Field::PktSrcaddr => push_ip(out, r.srcaddr),
            Field::Dstaddr | Field::PktDstaddr => push_ip(out, r.dstaddr),
            Field::Srcport => push_u64(out, u64::from(r.srcport)),
            Field::Dstport => push_u64(out, u64::from(r.dstport)),
            Field::Protocol => push_u64(out, u64::from(r.protocol)),
            Field::Packets => push_u64(out, r.packets),
            Field::Bytes => push_u64(out, r.bytes),
            Field::Start => push_u64(out, r.start),
            Field::End => push_u64(out, r.end),
            Field::TcpFlags => push_u64(out, u64::from(r.tcp_flags)),
            Field::Action => out.push_str(r.action()),
            Field::LogStatus => out.push_str(r.log_status.as_str()),
            // Without a configured interface, its ids are unknown: a replayed capture
            // prints two of them per default-format record.
            Field::AccountId
            | Field::InterfaceId
            | Field::VpcId
            | Field::SubnetId
            | Field::InstanceId
                if r.interface.is_none() =>
            {
                out.push('-')
            }
            _ => return false,
        }
        true
    }

    /// The value of `field` in `r`; `None` when it is unknown for this record.
    pub fn value<'r>(&self, r: &'r FlowRecord, field: Field) -> Option<Value<'r>> {
        // NODATA and SKIPDATA records say something of an interface and window, not of
        // a flow: AWS prints '-' for every flow field (aws-spec §2.4).
        if r.log_status != LogStatus::Ok && !field.describes_interface() {
            return None;
        }
        let iface = r.interface.as_deref();
        let s = |v: Option<&'r String>| v.map(|s| Value::Str(s.as_str()));
        Some(match field {
            Field::Version => Value::Num(u64::from(self.version)),
            Field::AccountId => return s(iface.and_then(|i| i.account_id.as_ref())),
            Field::InterfaceId => return s(iface.and_then(|i| i.interface_id.as_ref())),
            Field::VpcId => return s(iface.and_then(|i| i.vpc_id.as_ref())),
            Field::SubnetId => return s(iface.and_then(|i| i.subnet_id.as_ref())),
            Field::InstanceId => return s(iface.and_then(|i| i.instance_id.as_ref())),
            Field::Region => return s(iface.and_then(|i| i.region.as_ref())),
            Field::AzId => return s(iface.and_then(|i| i.az_id.as_ref())),
            // Mirrored packets carry the addresses as they crossed the interface; without
            // the interface's address list we cannot apply AWS's primary-IP substitution,
            // so srcaddr equals pkt-srcaddr.
            Field::Srcaddr | Field::PktSrcaddr => Value::Ip(r.srcaddr),
            Field::Dstaddr | Field::PktDstaddr => Value::Ip(r.dstaddr),
            Field::Srcport => Value::Num(u64::from(r.srcport)),
            Field::Dstport => Value::Num(u64::from(r.dstport)),
            Field::Protocol => Value::Num(u64::from(r.protocol)),
            Field::Packets => Value::Num(r.packets),
            Field::Bytes => Value::Num(r.bytes),
            Field::Start => Value::Num(r.start),
            Field::End => Value::Num(r.end),
            Field::Action => Value::Str(r.action()),
            Field::LogStatus => Value::Str(r.log_status.as_str()),
            Field::TcpFlags => Value::Num(u64::from(r.tcp_flags)),
            Field::Type => Value::Str(r.traffic_type()),
            Field::SublocationType
            | Field::SublocationId
            | Field::PktSrcAwsService
            | Field::PktDstAwsService
            | Field::TrafficPath => return None,
            Field::FlowDirection => return r.flow_direction.map(|d| Value::Str(d.as_str())),
            Field::Vni => return r.vni.map(|v| Value::Num(u64::from(v))),
            Field::MirrorSource => return r.mirror_source.map(Value::Ip),
            Field::ConnState => Value::Str(r.conn_state),
            Field::TruncatedPackets => Value::Num(r.truncated_packets),
            Field::CommunityId => return r.community_id().map(Value::Text),
            Field::Findings => {
                let app = r
                    .app
                    .as_deref()
                    .map(|a| a.findings.as_slice())
                    .unwrap_or(&[]);
                return (!app.is_empty() || !r.detections.is_empty())
                    .then_some(Value::Findings(app, &r.detections));
            }
            _ => return app_value(r.app.as_deref()?, field),
        })
    }
}

/// The value of a payload-fact field.
fn app_value(a: &AppFacts, field: Field) -> Option<Value<'_>> {
    fn s(v: &Option<String>) -> Option<Value<'_>> {
        v.as_deref().map(Value::Str)
    }
    fn list(v: &[String]) -> Option<Value<'_>> {
        (!v.is_empty()).then_some(Value::List(v))
    }
    match field {
        Field::AppProtocol => a.app_protocol.map(Value::Str),
        Field::TlsSni => s(&a.tls_sni),
        Field::TlsVersion => s(&a.tls_version),
        Field::TlsAlpn => list(&a.tls_alpn),
        Field::TlsCipher => a.tls_cipher.map(|c| Value::Num(u64::from(c))),
        Field::TlsJa3 => s(&a.tls_ja3),
        Field::TlsJa3s => s(&a.tls_ja3s),
        Field::TlsJa4 => s(&a.tls_ja4),
        Field::TlsCertSubject => s(&a.tls_cert_subject),
        Field::TlsCertIssuer => s(&a.tls_cert_issuer),
        Field::TlsCertSan => list(&a.tls_cert_san),
        Field::HttpMethod => s(&a.http_method),
        Field::HttpHost => s(&a.http_host),
        Field::HttpUri => s(&a.http_uri),
        Field::HttpUserAgent => s(&a.http_user_agent),
        Field::HttpStatus => a.http_status.map(|c| Value::Num(u64::from(c))),
        Field::HttpContentType => s(&a.http_content_type),
        Field::HttpRequests => a
            .http_method
            .as_ref()
            .map(|_| Value::Num(1 + a.http_more_requests as u64)),
        Field::DnsQuery => s(&a.dns_query),
        Field::DnsQueries => list(&a.dns_queries),
        Field::DnsQtype => a.dns_qtype.map(|c| Value::Num(u64::from(c))),
        Field::DnsRcode => a.dns_rcode.map(|c| Value::Num(u64::from(c))),
        Field::DnsAnswers => list(&a.dns_answers),
        Field::SshClient => s(&a.ssh_client),
        Field::SshServer => s(&a.ssh_server),
        Field::SshHassh => s(&a.ssh_hassh),
        Field::SshHasshServer => s(&a.ssh_hassh_server),
        _ => None,
    }
}

/// A field value, borrowed from the record.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    Num(u64),
    Str(&'a str),
    /// A string computed for this output (Community ID).
    Text(String),
    Ip(std::net::IpAddr),
    /// Several strings: comma-separated in text, an array in JSON.
    List(&'a [String]),
    /// `code=detail` pairs (connection findings, then detections): `;`-separated in
    /// text, objects in JSON.
    Findings(&'a [Finding], &'a [crate::detect::Detection]),
}

/// Decimal digits of `n` with `itoa` (two digits per step from a table, no `fmt`, no
/// UTF-8 check): every record has a dozen numbers, and the digit loop with `str`
/// validation was a fifth of the writer thread.
fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// An address as AWS prints it (dotted quad; IPv6 in its RFC 5952 short form).
fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v) => push_ipv4(out, v),
        std::net::IpAddr::V6(v) => push_ipv6(out, v),
    }
}

/// A dotted quad put together from the octet table in a small buffer and appended
/// once: appending the four numbers and three dots one by one was seven `memcpy`
/// calls per address, and the writer prints two addresses per record.
fn push_ipv4(out: &mut String, v: std::net::Ipv4Addr) {
    // 15 bytes at most ("255.255.255.255"), and room for the fixed three-byte copies.
    let mut buf = [0u8; 18];
    let n = default_line::ipv4_into(&mut buf, 0, v);
    // Digits and dots: always ASCII.
    out.push_str(std::str::from_utf8(&buf[..n]).unwrap_or_default());
}

/// IPv6 as std's `Display` writes it (RFC 5952: lower-case hex without leading zeros,
/// the first longest run of two or more zero groups as `::`, IPv4-mapped as
/// `::ffff:a.b.c.d`), without `fmt`'s machinery, which was a twentieth of the writer.
fn push_ipv6(out: &mut String, v: std::net::Ipv6Addr) {
    let mut b = [0u8; 40];
    match default_line::ipv6_into(&mut b, 0, v) {
        Some(end) => out.push_str(std::str::from_utf8(&b[..end]).unwrap_or_default()),
        None => {
            let _ = write!(out, "{v}");
        }
    }
}

/// `s` as a JSON string. Almost every value (names, hostnames, fingerprints) needs no
/// escape and is copied as it is; serde_json escapes exactly `"`, `\` and control
/// characters, so only those strings go through it.
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
    }
}

/// The (code, detail) pairs of a record's connection findings, then its detections
/// (whose details are put into words here).
fn finding_pairs<'a>(
    findings: &'a [Finding],
    detections: &'a [crate::detect::Detection],
) -> impl Iterator<Item = (&'static str, std::borrow::Cow<'a, str>)> {
    let findings = findings
        .iter()
        .map(|f| (f.code, std::borrow::Cow::Borrowed(f.detail.as_str())));
    let detections = detections
        .iter()
        .map(|d| (d.code(), std::borrow::Cow::Owned(d.to_string())));
    findings.chain(detections)
}

/// Findings and detections as a JSON array of `{"code", "detail"}` objects.
pub fn findings_json(
    findings: &[Finding],
    detections: &[crate::detect::Detection],
) -> serde_json::Value {
    finding_pairs(findings, detections)
        .map(|(code, detail)| serde_json::json!({"code": code, "detail": detail}))
        .collect()
}

impl Value<'_> {
    fn write_text(&self, out: &mut String) {
        match self {
            Value::Num(n) => push_u64(out, *n),
            // AWS text fields never contain spaces; an operator-supplied id with one
            // would shift every later column, so it is written with '_' instead.
            Value::Str(s) if s.contains(char::is_whitespace) => {
                out.extend(s.chars().map(|c| if c.is_whitespace() { '_' } else { c }))
            }
            Value::Str(s) => out.push_str(s),
            Value::Text(s) => Value::Str(s).write_text(out),
            Value::Ip(ip) => push_ip(out, *ip),
            Value::List(items) => {
                let joined = items.join(",");
                Value::Str(&joined).write_text(out);
            }
            Value::Findings(a, b) => {
                let joined = finding_pairs(a, b)
                    .map(|(code, detail)| format!("{code}={detail}"))
                    .collect::<Vec<_>>()
                    .join(";");
                Value::Str(&joined).write_text(out);
            }
        }
    }

    fn write_json(&self, out: &mut String) {
        match self {
            Value::Num(n) => push_u64(out, *n),
            Value::Str(s) => push_json_str(out, s),
            Value::Text(s) => Value::Str(s).write_json(out),
            Value::Ip(ip) => {
                out.push('"');
                push_ip(out, *ip);
                out.push('"');
            }
            Value::List(items) => {
                out.push_str(&serde_json::to_string(items).unwrap_or_else(|_| "[]".into()));
            }
            Value::Findings(a, b) => {
                out.push_str(&findings_json(a, b).to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FlowDirection, InterfaceInfo, LogStatus};
    use std::sync::Arc;

    fn rec() -> FlowRecord {
        FlowRecord {
            interface: Some(Arc::new(InterfaceInfo {
                interface_id: Some("eni-1235b8ca123456789".into()),
                account_id: Some("123456789010".into()),
                ..Default::default()
            })),
            vni: Some(5_569_041),
            mirror_source: Some("172.31.0.238".parse().unwrap()),
            srcaddr: "172.31.16.139".parse().unwrap(),
            dstaddr: "172.31.16.21".parse().unwrap(),
            srcport: 20641,
            dstport: 22,
            protocol: 6,
            packets: 20,
            bytes: 4249,
            start: 1418530010,
            end: 1418530070,
            log_status: LogStatus::Ok,
            tcp_flags: 18,
            flow_direction: Some(FlowDirection::Ingress),
            conn_state: "SF",
            truncated_packets: 0,
            app: None,
            community: None,
            detections: Vec::new(),
        }
    }

    #[test]
    fn default_format_matches_aws_example() {
        // The first example record of the AWS flow log documentation (aws-spec §2.8).
        let mut s = String::new();
        RecordFormat::default_text().write(&rec(), &mut s);
        assert_eq!(
            s,
            "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK\n"
        );
    }

    /// The default format's own line (`default_line`) is the general path's, byte for
    /// byte: IPv4 and IPv6 records with numbers of every digit count, and the records
    /// it leaves to the general path (IPv4-mapped, an interface's ids, NODATA).
    #[test]
    fn default_line_is_the_general_line() {
        let fast = RecordFormat::default_text();
        assert!(fast.default_shape);
        let general = RecordFormat {
            default_shape: false,
            ..RecordFormat::default_text()
        };
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut records = Vec::new();
        for i in 0..20_000u64 {
            let mut r = rec();
            r.interface = None;
            let a = next();
            r.srcaddr = std::net::Ipv4Addr::from((a >> 32) as u32).into();
            r.dstaddr = std::net::Ipv4Addr::from(a as u32).into();
            if i % 3 == 0 {
                // Groups zero at random: every shape of zero run.
                let g: [u16; 8] = std::array::from_fn(|k| {
                    if a >> (k + 48) & 1 == 0 {
                        0
                    } else {
                        (a.rotate_left(k as u32 * 8) as u16 >> ((k % 4) * 4)) | 1
                    }
                });
                r.dstaddr = std::net::Ipv6Addr::from(g).into();
            }
            r.srcport = next() as u16;
            r.dstport = (next() % 1000) as u16;
            r.protocol = next() as u8;
            r.packets = next() >> (next() % 64);
            r.bytes = next() >> (next() % 64);
            r.start = next() >> (next() % 64);
            r.end = if i % 2 == 0 { u64::MAX } else { r.start };
            records.push(r);
        }
        let mut v6 = rec();
        v6.interface = None;
        v6.srcaddr = "::ffff:192.0.2.1".parse().unwrap();
        records.push(v6);
        records.push(rec());
        records.push(FlowRecord::status_only(
            None,
            Some(7),
            None,
            LogStatus::NoData,
            1,
            2,
        ));
        let (mut a, mut b) = (String::from("x\n"), String::from("x\n"));
        for r in &records {
            fast.write(r, &mut a);
            general.write(r, &mut b);
        }
        assert_eq!(a, b);
    }

    /// The detectors run only for formats that print what they find.
    #[test]
    fn only_formats_with_findings_print_findings() {
        assert!(!RecordFormat::default_text().prints_findings());
        assert!(RecordFormat::json().prints_findings());
        assert!(RecordFormat::json_as(OutputKind::Parquet).prints_findings());
        let custom = |spec| RecordFormat::custom(OutputKind::Text, spec).unwrap();
        assert!(!custom("${srcaddr} ${dstaddr} ${app-protocol}").prints_findings());
        assert!(custom("${srcaddr} $${findings}").prints_findings());
    }

    #[test]
    fn custom_format_version_and_dashes() {
        let f = RecordFormat::custom(
            OutputKind::Text,
            "${version} ${vpc-id} ${tcp-flags} ${flow-direction} ${traffic-path} ${vni} ${ecs-task-id}",
        )
        .unwrap();
        assert_eq!(f.version(), 7);
        let mut s = String::new();
        f.write(&rec(), &mut s);
        assert_eq!(s, "7 - 18 ingress - 5569041 -\n");
    }

    #[test]
    fn unknown_field_is_named() {
        let e = RecordFormat::custom(OutputKind::Text, "${srcaddr} ${bogus}").unwrap_err();
        assert!(e.contains("'bogus'"), "{e}");
        let e = RecordFormat::custom(OutputKind::Text, "srcaddr").unwrap_err();
        assert!(e.contains("'srcaddr'"), "{e}");
    }

    #[test]
    fn nodata_record_prints_dashes_like_aws() {
        let r = FlowRecord::status_only(
            rec().interface,
            Some(7),
            None,
            LogStatus::NoData,
            1_418_530_010,
            1_418_530_070,
        );
        let mut s = String::new();
        RecordFormat::default_text().write(&r, &mut s);
        assert_eq!(
            s,
            "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1418530010 1418530070 - NODATA\n"
        );
    }

    #[test]
    fn direct_text_is_the_text_of_the_value_for_every_field() {
        let mut v6 = rec();
        v6.srcaddr = "2001:db8:a::10".parse().unwrap();
        v6.dstaddr = "2606:4700::6810:85e5".parse().unwrap();
        v6.mirror_source = None;
        v6.flow_direction = None;
        let nodata =
            FlowRecord::status_only(rec().interface, Some(7), None, LogStatus::NoData, 10, 70);
        let mut no_interface = rec();
        no_interface.interface = None;
        for r in [rec(), v6, nodata, no_interface] {
            for field in Field::ALL {
                let f = RecordFormat::custom(OutputKind::Text, &format!("${{{}}}", field.name()))
                    .unwrap();
                let mut fast = String::new();
                f.write(&r, &mut fast);
                let mut slow = String::new();
                match f.value(&r, *field) {
                    Some(v) => v.write_text(&mut slow),
                    None => slow.push('-'),
                }
                slow.push('\n');
                assert_eq!(fast, slow, "{}", field.name());
            }
        }
    }

    /// Every octet value in every position (and the longest and shortest quads), with
    /// text already in the buffer: the table's digits and the fixed three-byte copies.
    #[test]
    fn ipv4_text_is_what_display_writes() {
        let mut cases = vec![
            std::net::Ipv4Addr::new(0, 0, 0, 0),
            std::net::Ipv4Addr::new(255, 255, 255, 255),
        ];
        for o in 0..=255u8 {
            for at in 0..4 {
                let mut q = [7u8, 100, 19, 250];
                q[at] = o;
                cases.push(q.into());
            }
        }
        for v in cases {
            let mut s = String::from("x ");
            push_ipv4(&mut s, v);
            assert_eq!(s, format!("x {v}"));
        }
    }

    #[test]
    fn ipv6_text_is_what_display_writes() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut cases: Vec<std::net::Ipv6Addr> = [
            "::",
            "::1",
            "1::",
            "2001:db8::1",
            "2001:db8:0:0:1:0:0:1",
            "2001:0:0:1::1",
            "0:0:1::",
            "::ffff:192.0.2.1",
            "::192.0.2.1",
            "fe80::1:0:0:0",
            "1:0:1:0:1:0:1:0",
            "2606:4700::6810:85e5",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        // Random groups, each zero with probability one half: every shape of zero run.
        for _ in 0..20_000 {
            let r = next();
            let g: [u16; 8] = std::array::from_fn(|i| {
                if r >> (i + 48) & 1 == 0 {
                    0
                } else {
                    // One to four hex digits.
                    (r.rotate_left(i as u32 * 8) as u16 >> ((i % 4) * 4)) | 1
                }
            });
            cases.push(g.into());
        }
        for v in cases {
            let mut s = String::new();
            push_ipv6(&mut s, v);
            assert_eq!(s, v.to_string());
        }
    }

    #[test]
    fn json_strings_escape_as_serde_json_does() {
        for s in [
            "plain.example",
            "caf\u{e9}",
            "a\"b",
            "back\\slash",
            "tab\tnl\n",
            "\u{7f}",
            "",
        ] {
            let mut out = String::new();
            push_json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn json_uses_aws_names_and_omits_unknown() {
        let mut s = String::new();
        RecordFormat::json().write(&rec(), &mut s);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["srcaddr"], "172.31.16.139");
        assert_eq!(v["bytes"], 4249);
        assert_eq!(v["version"], 5);
        assert_eq!(v["vni"], 5_569_041);
        assert_eq!(v["conn-state"], "SF");
        assert!(v.get("vpc-id").is_none());
        assert!(v.get("traffic-path").is_none());
    }
}
