//! The bytes of HTTP/1.1 for the lean client, without I/O: a request's
//! head written into a buffer, an answer's head parsed (httparse), and the
//! framing of its body (none, a length, chunked, until close) followed
//! byte by byte.
//!
//! Owns the format only; sockets, deadlines and the pool are
//! [`super::conn`]'s and [`super`]'s.

use http::{HeaderMap, HeaderValue};

/// Most header lines an answer may carry (hyper's default).
const MAX_RESPONSE_HEADERS: usize = 100;
/// Longest answer head; a longer one is a broken answer.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Why an answer could not be read as HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The head is not HTTP/1.x (or has more than 100 header lines).
    #[error("invalid answer head: {0}")]
    Head(String),
    /// The head is longer than [`MAX_RESPONSE_HEAD`].
    #[error("answer head longer than {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLong,
    /// `Content-Length` is not one number.
    #[error("invalid content-length")]
    ContentLength,
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    #[error("unexpected protocol switch (101)")]
    Upgrade,
    /// A chunked body broke its framing.
    #[error("invalid chunked body: {0}")]
    Chunked(&'static str),
}

/// Writes the head of a `POST` of `body_len` bytes to `target` (origin
/// form) on `host` into `buf` from a header map (the OAuth2 path; the
/// usual one is [`crate::deliver::head`]'s): `Host` and `Content-Length` first, then
/// `headers` (less any `Host`, `Content-Length` or `Transfer-Encoding` of
/// their own), then `user_agent` unless `headers` name one.
pub fn write_request_head(
    buf: &mut Vec<u8>,
    (target, host): (&str, &str),
    headers: &HeaderMap,
    user_agent: &HeaderValue,
    body_len: usize,
) {
    buf.extend_from_slice(b"POST ");
    buf.extend_from_slice(target.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    buf.extend_from_slice(host.as_bytes());
    buf.extend_from_slice(b"\r\ncontent-length: ");
    buf.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
    buf.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == http::header::HOST
            || name == http::header::CONTENT_LENGTH
            || name == http::header::TRANSFER_ENCODING
        {
            continue;
        }
        header_line(buf, name.as_str(), value);
    }
    if !headers.contains_key(http::header::USER_AGENT) {
        header_line(buf, "user-agent", user_agent);
    }
    buf.extend_from_slice(b"\r\n");
}

fn header_line(buf: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    buf.extend_from_slice(name.as_bytes());
    buf.extend_from_slice(b": ");
    // A `HeaderValue` holds no CR or LF.
    buf.extend_from_slice(value.as_bytes());
    buf.extend_from_slice(b"\r\n");
}

/// How an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (`204`, `304`, or `Content-Length: 0`).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the receiver closes the connection.
    UntilClose,
}

/// The parts of an answer's head the sender uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// `Retry-After`, when present and text.
    pub retry_after: Option<String>,
    /// How the body ends.
    pub framing: Framing,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
}

/// What the bytes at the start of a read buffer hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// An interim `1xx` answer of this many bytes, to skip.
    Interim(usize),
    /// The final head, and how many bytes it took.
    Final(ResponseHead, usize),
}

/// Parses the answer head at the start of `buf`.
pub fn parse_response_head(buf: &[u8]) -> Result<Parsed, WireError> {
    let mut lines = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut lines);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD => {
            return Err(WireError::HeadTooLong);
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(e) => return Err(WireError::Head(e.to_string())),
    };
    let status = response.code.unwrap_or(0);
    if status == 101 {
        return Err(WireError::Upgrade);
    }
    if (100..200).contains(&status) {
        return Ok(Parsed::Interim(len));
    }
    let http10 = response.version == Some(0);
    let mut retry_after = None;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut close = http10;
    for line in response.headers.iter() {
        let name = line.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(line.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or(WireError::ContentLength)?;
            if length.is_some_and(|seen| seen != value) {
                return Err(WireError::ContentLength);
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked only when it is the last coding named.
            let last = line.value.rsplit(|&b| b == b',').next().unwrap_or(&[]);
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in line.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if http10 && token.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = std::str::from_utf8(line.value).ok().map(str::to_string);
        }
    }
    let framing = if status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            // Another coding last: the body ends with the connection.
            (Some(false), _) => Framing::UntilClose,
            (None, Some(0)) => Framing::Empty,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    // A length beside a transfer coding is a smuggling risk: the
    // connection is not used again (RFC 9112 §6.3).
    let keep_alive =
        !close && framing != Framing::UntilClose && !(chunked.is_some() && length.is_some());
    Ok(Parsed::Final(
        ResponseHead {
            status,
            retry_after,
            framing,
            keep_alive,
        },
        len,
    ))
}

/// Follows a chunked body: sizes, data, trailers, the last CRLF.
#[derive(Debug, Default)]
pub struct ChunkedBody {
    state: ChunkState,
    /// The size being read, then what is left of the chunk's data.
    size: u64,
    digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Whitespace or an extension after the size, up to its CR.
    SizeRest,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the empty last line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

impl ChunkedBody {
    /// Whether the body's last line was read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Reads what it can of `input`; returns how many bytes it took (all
    /// of them unless the body ended within them).
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, WireError> {
        let mut at = 0;
        while at < input.len() {
            if self.state == ChunkState::Data {
                let left = input.len() - at;
                let take = usize::try_from(self.size).map_or(left, |size| size.min(left));
                at += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = ChunkState::DataCr;
                }
                continue;
            }
            let byte = input[at];
            at += 1;
            self.state = self.step(byte)?;
            if self.state == ChunkState::Done {
                break;
            }
        }
        Ok(at)
    }

    fn step(&mut self, byte: u8) -> Result<ChunkState, WireError> {
        use ChunkState as S;
        Ok(match (self.state, byte) {
            (S::Size, b'\r') if self.digits > 0 => S::SizeLf,
            (S::Size, b';' | b' ' | b'\t') if self.digits > 0 => S::SizeRest,
            (S::Size, _) => {
                let digit = (byte as char)
                    .to_digit(16)
                    .ok_or(WireError::Chunked("bad size"))?;
                if self.digits >= 16 {
                    return Err(WireError::Chunked("size too large"));
                }
                self.size = self.size * 16 + u64::from(digit);
                self.digits += 1;
                S::Size
            }
            (S::SizeRest, b'\r') => S::SizeLf,
            (S::SizeRest, b'\n') => return Err(WireError::Chunked("bare LF")),
            (S::SizeRest, _) => S::SizeRest,
            (S::SizeLf, b'\n') if self.size == 0 => S::TrailerStart,
            (S::SizeLf, b'\n') => S::Data,
            (S::DataCr, b'\r') => S::DataLf,
            (S::DataLf, b'\n') => {
                self.digits = 0;
                S::Size
            }
            (S::TrailerStart, b'\r') => S::EndLf,
            (S::TrailerStart | S::TrailerLine, b'\n') => {
                return Err(WireError::Chunked("bare LF"));
            }
            (S::TrailerLine, b'\r') => S::TrailerLf,
            (S::TrailerStart | S::TrailerLine, _) => S::TrailerLine,
            (S::TrailerLf, b'\n') => S::TrailerStart,
            (S::EndLf, b'\n') => S::Done,
            (S::Done, _) => S::Done,
            (S::SizeLf | S::DataCr | S::DataLf | S::TrailerLf | S::EndLf, _) => {
                return Err(WireError::Chunked("missing CRLF"));
            }
            (S::Data, _) => S::Data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Parsed, WireError> {
        parse_response_head(text.as_bytes())
    }

    fn final_head(text: &str) -> ResponseHead {
        match head(text) {
            Ok(Parsed::Final(head, len)) => {
                assert_eq!(len, text.len(), "the whole head is taken");
                head
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_request_head_is_written_whole() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
        headers.insert("host", HeaderValue::from_static("evil"));
        headers.insert("content-length", HeaderValue::from_static("9"));
        let mut buf = Vec::new();
        let ua = HeaderValue::from_static("hookstream/1");
        write_request_head(&mut buf, ("/in?x=1", "127.0.0.1:8080"), &headers, &ua, 42);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "POST /in?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8080\r\ncontent-length: 42\r\n\
             content-type: application/json\r\nwebhook-id: msg_1\r\nuser-agent: hookstream/1\r\n\r\n"
        );
        headers.insert("user-agent", HeaderValue::from_static("mine"));
        let mut buf = Vec::new();
        write_request_head(&mut buf, ("/", "h"), &headers, &ua, 0);
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("user-agent: mine\r\n"), "{text}");
        assert!(!text.contains("hookstream/1"), "{text}");
    }

    #[test]
    fn heads_give_status_framing_and_reuse() {
        let h = final_head("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
        assert_eq!(
            (h.status, h.framing, h.keep_alive),
            (200, Framing::Length(2), true)
        );
        let h = final_head("HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
        let h = final_head("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);
        let h = final_head(
            "HTTP/1.1 503 Busy\r\nTransfer-Encoding: gzip, chunked\r\nRetry-After: 7\r\n\r\n",
        );
        assert_eq!((h.status, h.framing), (503, Framing::Chunked));
        assert_eq!(h.retry_after.as_deref(), Some("7"));
        let h = final_head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::UntilClose, false));
        let h = final_head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.keep_alive);
        let h = final_head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.keep_alive, "HTTP/1.0 closes unless it says keep-alive");
        let h =
            final_head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\n");
        assert!(h.keep_alive);
        let h = final_head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        let h = final_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
    }

    #[test]
    fn partial_interim_and_broken_heads() {
        assert_eq!(head("HTTP/1.1 200 OK\r\nContent-Le"), Ok(Parsed::Partial));
        assert_eq!(
            head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"),
            Ok(Parsed::Interim(25))
        );
        assert_eq!(
            head("HTTP/1.1 101 Switching\r\n\r\n"),
            Err(WireError::Upgrade)
        );
        assert!(matches!(
            head("SSH-2.0-OpenSSH\r\n\r\n"),
            Err(WireError::Head(_))
        ));
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n"),
            Err(WireError::ContentLength)
        );
        assert_eq!(
            head("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            Err(WireError::ContentLength)
        );
        let many: String = (0..101).map(|i| format!("x-{i}: y\r\n")).collect();
        assert!(matches!(
            head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")),
            Err(WireError::Head(_))
        ));
        let long = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_RESPONSE_HEAD));
        assert_eq!(head(&long), Err(WireError::HeadTooLong));
    }

    /// Feeds `body` in pieces of `step` bytes; returns the bytes taken.
    fn feed_all(body: &[u8], step: usize) -> Result<(usize, bool), WireError> {
        let mut chunked = ChunkedBody::default();
        let mut taken = 0;
        for piece in body.chunks(step) {
            let n = chunked.feed(piece)?;
            taken += n;
            if chunked.is_done() {
                break;
            }
            assert_eq!(n, piece.len());
        }
        Ok((taken, chunked.is_done()))
    }

    #[test]
    fn chunked_bodies_end_where_they_say() {
        let body =
            b"5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, body.len()] {
            assert_eq!(
                feed_all(body, step),
                Ok((body.len() - 4, true)),
                "step {step}"
            );
        }
        assert_eq!(feed_all(b"0\r\n\r\n", 1), Ok((5, true)));
        assert_eq!(feed_all(b"3\r\nab", 2), Ok((5, false)));
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"3\r\nabcX\r\n",
            b"3\nabc",
            b"11111111111111111\r\n",
            b"0\r\nx-t: 1\n\n",
        ] {
            assert!(
                feed_all(bad, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
