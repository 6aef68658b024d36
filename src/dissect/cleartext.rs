//! Cleartext login protocols: FTP, POP3, IMAP, SMTP and Telnet. Recognised by their
//! server greetings or client commands; credentials are reported by user name and
//! mechanism only, never with the secret.

/// What a cleartext login revealed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Login {
    pub protocol: &'static str,
    /// Finding code, e.g. `ftp-cleartext-credentials`.
    pub code: &'static str,
    pub user: Option<String>,
    pub mechanism: &'static str,
}

/// Identifies the protocol from the server's first line.
pub fn probe_server(b: &[u8], server_port: u16) -> Option<&'static str> {
    let line = first_line(b)?;
    let upper = line.to_ascii_uppercase();
    if upper.starts_with("+OK") {
        Some("pop3")
    } else if upper.starts_with("* OK") || upper.starts_with("* PREAUTH") {
        Some("imap")
    } else if upper.starts_with("220") {
        // FTP and SMTP greet alike; the text or the port tells them apart.
        if upper.contains("SMTP")
            || upper.contains("ESMTP")
            || matches!(server_port, 25 | 465 | 587)
        {
            Some("smtp")
        } else {
            Some("ftp")
        }
    } else if b.first() == Some(&0xff) && server_port == 23 {
        Some("telnet")
    } else {
        None
    }
}

fn first_line(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|c| *c == b'\n')?;
    Some(String::from_utf8_lossy(&b[..end]).trim_end().to_string())
}

/// Looks for a login in the client's commands.
pub fn client_login(protocol: &str, client: &[u8], server: &[u8]) -> Option<Login> {
    let text = String::from_utf8_lossy(client);
    let lines: Vec<&str> = text.split('\n').map(|l| l.trim_end_matches('\r')).collect();
    let find = |cmd: &str| {
        lines.iter().find_map(|l| {
            let (c, rest) = l.split_once(' ').unwrap_or((l, ""));
            c.eq_ignore_ascii_case(cmd).then(|| rest.trim().to_string())
        })
    };
    match protocol {
        "ftp" | "pop3" => {
            let user = find("USER")?;
            let has_pass = find("PASS").is_some();
            has_pass.then_some(Login {
                protocol: if protocol == "ftp" { "ftp" } else { "pop3" },
                code: if protocol == "ftp" {
                    "ftp-cleartext-credentials"
                } else {
                    "pop3-cleartext-credentials"
                },
                user: Some(user),
                mechanism: "USER/PASS",
            })
        }
        "imap" => lines.iter().find_map(|l| {
            let mut parts = l.split_whitespace();
            let _tag = parts.next()?;
            let cmd = parts.next()?;
            if cmd.eq_ignore_ascii_case("LOGIN") {
                Some(Login {
                    protocol: "imap",
                    code: "imap-cleartext-credentials",
                    user: parts.next().map(|u| u.trim_matches('"').to_string()),
                    mechanism: "LOGIN",
                })
            } else if cmd.eq_ignore_ascii_case("AUTHENTICATE")
                && parts
                    .next()
                    .is_some_and(|m| m.eq_ignore_ascii_case("PLAIN"))
            {
                Some(Login {
                    protocol: "imap",
                    code: "imap-cleartext-credentials",
                    user: plain_user(parts.next()),
                    mechanism: "AUTH PLAIN",
                })
            } else {
                None
            }
        }),
        "smtp" => lines.iter().find_map(|l| {
            let mut parts = l.split_whitespace();
            if !parts.next()?.eq_ignore_ascii_case("AUTH") {
                return None;
            }
            let mech = parts.next()?.to_ascii_uppercase();
            match mech.as_str() {
                "PLAIN" => Some(Login {
                    protocol: "smtp",
                    code: "smtp-cleartext-credentials",
                    user: plain_user(parts.next()),
                    mechanism: "AUTH PLAIN",
                }),
                "LOGIN" => Some(Login {
                    protocol: "smtp",
                    code: "smtp-cleartext-credentials",
                    user: None,
                    mechanism: "AUTH LOGIN",
                }),
                _ => None,
            }
        }),
        "telnet" => {
            let prompt = String::from_utf8_lossy(server).to_ascii_lowercase();
            (prompt.contains("login:") && prompt.contains("password:")).then_some(Login {
                protocol: "telnet",
                code: "telnet-cleartext-login",
                user: None,
                mechanism: "login prompt",
            })
        }
        _ => None,
    }
}

/// The authorisation identity of a SASL PLAIN blob (`authzid\0authcid\0passwd`).
fn plain_user(b64: Option<&str>) -> Option<String> {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64?.trim())
        .ok()?;
    let mut parts = raw.split(|c| *c == 0);
    let authz = parts.next()?;
    let authc = parts.next()?;
    let user = if authc.is_empty() { authz } else { authc };
    Some(String::from_utf8_lossy(user).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ftp_user_pass_reports_user_only() {
        assert_eq!(
            probe_server(b"220 ProFTPD Server ready.\r\n", 21),
            Some("ftp")
        );
        let l = client_login("ftp", b"USER anonymous\r\nPASS secret@\r\n", b"").unwrap();
        assert_eq!(l.user.as_deref(), Some("anonymous"));
        assert!(!format!("{l:?}").contains("secret"));
    }

    #[test]
    fn smtp_and_imap_auth_plain() {
        assert_eq!(
            probe_server(b"220 mail.example.com ESMTP Postfix\r\n", 2525),
            Some("smtp")
        );
        // base64("\0bob\0hunter2")
        let l = client_login("smtp", b"EHLO x\r\nAUTH PLAIN AGJvYgBodW50ZXIy\r\n", b"").unwrap();
        assert_eq!(l.user.as_deref(), Some("bob"));
        let l = client_login("imap", b"a1 LOGIN \"carol\" \"pw\"\r\n", b"").unwrap();
        assert_eq!(l.user.as_deref(), Some("carol"));
    }
}
