//! Findings: stable codes with a short detail, attached to the records of the
//! connection they concern. Thresholds are named constants here; the record-stream
//! detectors (scans, floods, transfers) live in `detect/`.

use super::AppFacts;

/// Findings kept per connection.
pub const MAX_FINDINGS: usize = 8;
/// A DNS label this long is unusual for names people type (tunnels pack data in labels).
pub const DNS_LONG_LABEL: usize = 50;
/// Shannon entropy (bits per character) above which a long label looks encoded.
pub const DNS_HIGH_ENTROPY: f64 = 4.0;
/// Minimum label length for the entropy test to mean anything.
pub const DNS_ENTROPY_MIN_LEN: usize = 24;
/// TXT queries on one connection that look like a channel rather than lookups.
pub const DNS_TXT_VOLUME: u32 = 10;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Finding {
    pub code: &'static str,
    pub detail: String,
}

/// Adds a finding once.
pub fn add(list: &mut Vec<Finding>, code: &'static str, detail: String) {
    if list.len() < MAX_FINDINGS && !list.iter().any(|f| f.code == code && f.detail == detail) {
        list.push(Finding { code, detail });
    }
}

/// Ports where each protocol is expected (IANA and common practice).
fn standard_ports(protocol: &str) -> &'static [u16] {
    match protocol {
        "tls" => &[
            443, 8443, 993, 995, 465, 636, 853, 989, 990, 992, 994, 5061, 6443, 9443, 4443, 10443,
        ],
        "quic" => &[443, 8443, 4433, 784, 853],
        "http" => &[80, 8080, 8000, 8008, 8888, 3128, 8081, 591, 5000, 9000],
        "ssh" => &[22, 2222],
        "dns" => &[53, 5353, 5355],
        "ftp" => &[21],
        "smtp" => &[25, 465, 587, 2525],
        "pop3" => &[110],
        "imap" => &[143],
        "telnet" => &[23],
        _ => &[],
    }
}

fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Findings that follow from a connection's facts once inspection is over.
pub fn connection_findings(f: &AppFacts, server_port: u16, mut list: Vec<Finding>) -> Vec<Finding> {
    if let Some(p) = f.app_protocol {
        let ports = standard_ports(p);
        if !ports.is_empty() && !ports.contains(&server_port) {
            add(
                &mut list,
                "protocol-nonstandard-port",
                format!("{p} on port {server_port}"),
            );
        }
    }
    if let Some(v) = &f.tls_version {
        if matches!(v.as_str(), "SSLv3" | "TLSv1.0" | "TLSv1.1") {
            add(&mut list, "tls-deprecated-version", v.clone());
        }
    }
    if let (Some(sni), Some(host)) = (&f.tls_sni, &f.http_host) {
        let host = host.split(':').next().unwrap_or(host);
        if !sni.eq_ignore_ascii_case(host) {
            add(
                &mut list,
                "sni-host-mismatch",
                format!("sni={sni} host={host}"),
            );
        }
    }
    if let Some(q) = &f.dns_query {
        if let Some(label) = q.split('.').max_by_key(|l| l.len()) {
            if label.len() >= DNS_LONG_LABEL {
                add(
                    &mut list,
                    "dns-tunnel-suspect",
                    format!("label of {} characters", label.len()),
                );
            } else if label.len() >= DNS_ENTROPY_MIN_LEN && entropy(label) >= DNS_HIGH_ENTROPY {
                add(
                    &mut list,
                    "dns-tunnel-suspect",
                    format!("high-entropy label ({:.1} bits/char)", entropy(label)),
                );
            }
        }
        if f.dns_qtype == Some(16) && q.len() > DNS_LONG_LABEL {
            add(&mut list, "dns-tunnel-suspect", "long TXT query".into());
        }
        if f.dns_txt_queries >= DNS_TXT_VOLUME {
            add(
                &mut list,
                "dns-tunnel-suspect",
                format!("{} TXT queries on one connection", f.dns_txt_queries),
            );
        }
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonstandard_port_and_deprecated_tls() {
        let f = AppFacts {
            app_protocol: Some("http"),
            ..Default::default()
        };
        let l = connection_findings(&f, 4444, Vec::new());
        assert_eq!(
            l,
            vec![Finding {
                code: "protocol-nonstandard-port",
                detail: "http on port 4444".into()
            }]
        );
        let f = AppFacts {
            app_protocol: Some("tls"),
            tls_version: Some("TLSv1.0".into()),
            ..Default::default()
        };
        let l = connection_findings(&f, 443, Vec::new());
        assert_eq!(l[0].code, "tls-deprecated-version");
    }

    #[test]
    fn dns_tunnel_heuristics() {
        let f = AppFacts {
            app_protocol: Some("dns"),
            dns_query: Some("www.example.com".into()),
            ..Default::default()
        };
        assert!(connection_findings(&f, 53, Vec::new()).is_empty());
        let f = AppFacts {
            app_protocol: Some("dns"),
            dns_query: Some(
                "dGhpcyBpcyBleGZpbHRyYXRlZCBkYXRhIGZyb20gYSBob3N0.t.example.com".into(),
            ),
            ..Default::default()
        };
        assert_eq!(
            connection_findings(&f, 53, Vec::new())[0].code,
            "dns-tunnel-suspect"
        );
    }
}
