//! HTTP/1.x with `httparse`: requests from the client stream (method, Host, URI,
//! User-Agent, Authorization), the first response from the server stream (status,
//! Content-Type). Pipelined and keep-alive requests are walked by Content-Length, so
//! the record can say how many more requests the connection carried.

/// Headers read per message.
const MAX_HEADERS: usize = 64;
/// Requests walked per connection within the inspected bytes.
pub const MAX_REQUESTS: usize = 64;

const METHODS: [&[u8]; 10] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"HEAD ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PROPFIND ",
];

pub fn probe_request(b: &[u8]) -> bool {
    METHODS.iter().any(|m| b.starts_with(m))
}

pub fn probe_response(b: &[u8]) -> bool {
    b.starts_with(b"HTTP/1.") || b.starts_with(b"HTTP/0.9")
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub uri: String,
    pub host: Option<String>,
    pub user_agent: Option<String>,
    /// The user name of an `Authorization: Basic` header (never the password).
    pub basic_user: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    pub first: Option<Request>,
    /// Complete requests seen after the first.
    pub more: usize,
    /// False while the first request's header is still incomplete.
    pub complete: bool,
}

/// Parses the requests at the start of a client stream.
pub fn requests(stream: &[u8]) -> Option<Requests> {
    let mut out = Requests::default();
    let mut rest = stream;
    for _ in 0..MAX_REQUESTS {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let consumed = match req.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if out.first.is_none() {
                    // Keep what the partial header already shows (a truncated mirror may
                    // never complete it).
                    out.first = partial_request(rest);
                }
                return Some(out);
            }
            Err(_) => {
                return if out.first.is_some() {
                    Some(out)
                } else {
                    partial_request(rest).map(|r| Requests {
                        first: Some(r),
                        more: 0,
                        complete: false,
                    })
                }
            }
        };
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
        };
        let body_len = header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let r = Request {
            method: req.method.unwrap_or("").to_string(),
            uri: req.path.unwrap_or("").to_string(),
            host: header("host"),
            user_agent: header("user-agent"),
            basic_user: header("authorization").and_then(|a| basic_user(&a)),
        };
        if out.first.is_none() {
            out.first = Some(r);
            out.complete = true;
        } else {
            out.more += 1;
        }
        let next = consumed.saturating_add(body_len);
        if next >= rest.len() {
            break;
        }
        rest = &rest[next..];
    }
    Some(out)
}

/// Method and URI of a request line, and any complete header lines, from a header
/// that never completed.
fn partial_request(b: &[u8]) -> Option<Request> {
    let line_end = b.iter().position(|c| *c == b'\n')?;
    let line = String::from_utf8_lossy(&b[..line_end]);
    let mut parts = line.trim_end().split(' ');
    let method = parts.next()?.to_string();
    let uri = parts.next()?.to_string();
    if !METHODS
        .iter()
        .any(|m| m.starts_with(method.as_bytes()) && m.len() == method.len() + 1)
    {
        return None;
    }
    let mut r = Request {
        method,
        uri,
        ..Default::default()
    };
    for l in b[line_end + 1..].split(|c| *c == b'\n') {
        let l = String::from_utf8_lossy(l);
        if !l.ends_with('\r') {
            break; // the last, cut line
        }
        if let Some((k, v)) = l.trim_end().split_once(':') {
            match k.to_ascii_lowercase().as_str() {
                "host" => r.host = Some(v.trim().to_string()),
                "user-agent" => r.user_agent = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some(r)
}

fn basic_user(auth: &str) -> Option<String> {
    use base64::Engine;
    let (scheme, cred) = auth.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(cred.trim())
        .ok()?;
    let text = String::from_utf8_lossy(&raw);
    Some(text.split(':').next().unwrap_or("").to_string())
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
}

/// The first response of a server stream.
pub fn response(stream: &[u8]) -> Option<Response> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(stream) {
        Ok(httparse::Status::Complete(_)) => Some(Response {
            status: resp.code.unwrap_or(0),
            content_type: resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-type"))
                .map(|h| String::from_utf8_lossy(h.value).trim().to_string()),
        }),
        // The status line alone is enough for the status.
        _ => {
            let line = stream.split(|c| *c == b'\n').next()?;
            let text = String::from_utf8_lossy(line);
            let code = text.split(' ').nth(1)?.trim().parse().ok()?;
            Some(Response {
                status: code,
                content_type: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Client stream of arkime `tests/pcap/http-simple-get.pcap`-style request.
    const GET: &[u8] = b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8.5.0\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\n\r\n";

    #[test]
    fn request_fields_and_basic_user_without_password() {
        let r = requests(GET).unwrap();
        let f = r.first.unwrap();
        assert_eq!((f.method.as_str(), f.uri.as_str()), ("GET", "/index.html"));
        assert_eq!(f.host.as_deref(), Some("www.example.com"));
        assert_eq!(f.basic_user.as_deref(), Some("alice"));
        assert_eq!(r.more, 0);
    }

    #[test]
    fn pipelined_requests_are_counted() {
        let mut two = GET.to_vec();
        two.extend_from_slice(b"POST /x HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nabcGET /y HTTP/1.1\r\nHost: c\r\n\r\n");
        let r = requests(&two).unwrap();
        assert_eq!(r.more, 2);
    }

    #[test]
    fn truncated_request_keeps_what_it_shows() {
        for n in 1..GET.len() {
            if let Some(r) = requests(&GET[..n]) {
                if let Some(f) = r.first {
                    assert_eq!(f.method, "GET");
                }
            }
        }
        let r = requests(&GET[..50]).unwrap().first.unwrap();
        assert_eq!(r.host.as_deref(), Some("www.example.com"));
    }

    #[test]
    fn response_status() {
        let r = response(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n\r\n").unwrap();
        assert_eq!(
            (r.status, r.content_type.as_deref()),
            (404, Some("text/html"))
        );
        assert_eq!(response(b"HTTP/1.1 200 OK\r\nServ").unwrap().status, 200);
    }
}
