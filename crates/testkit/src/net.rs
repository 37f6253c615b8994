//! Minimal synchronous clients used as readiness probes and for MailHog's HTTP
//! API: a TCP connect, an HTTP/1.0 request, the first step of an AMQP 0-9-1
//! handshake, and a MongoDB `ping` over OP_MSG. Small on purpose: no runtime,
//! no driver, usable from statics.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        CONNECT_TIMEOUT,
    )?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(stream)
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn tcp_open(port: u16) -> bool {
    connect(port).is_ok()
}

/// Whether 127.0.0.1:`port` can be bound right now.
pub(crate) fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// An HTTP response: status code and body.
pub(crate) struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// Sends `METHOD path` as HTTP/1.0 (so the server closes the connection and
/// never uses chunked encoding) and reads the whole response.
pub(crate) fn http_request(method: &str, port: u16, path: &str) -> std::io::Result<HttpResponse> {
    let mut stream = connect(port)?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not an HTTP response: {head:.80}"),
            )
        })?;
    Ok(HttpResponse {
        status,
        body: body.to_owned(),
    })
}

/// Whether an AMQP 0-9-1 server on `port` answers the protocol header with
/// `Connection.Start` (frame type 1, channel 0, class 10, method 10): the
/// broker has booted far enough to accept clients.
pub(crate) fn amqp_handshake(port: u16) -> bool {
    let Ok(mut stream) = connect(port) else {
        return false;
    };
    if stream.write_all(b"AMQP\x00\x00\x09\x01").is_err() {
        return false;
    }
    // 7-byte frame header, then class id and method id.
    let mut frame = [0u8; 11];
    if stream.read_exact(&mut frame).is_err() {
        return false;
    }
    frame[0] == 1 && frame[1..3] == [0, 0] && frame[7..9] == [0, 10] && frame[9..11] == [0, 10]
}

/// Whether a MongoDB wire-protocol server on `port` answers `{ping: 1}` on
/// database `admin` with `ok: 1`.
pub(crate) fn mongo_ping(port: u16) -> bool {
    let Ok(mut stream) = connect(port) else {
        return false;
    };
    if stream.write_all(&ping_message()).is_err() {
        return false;
    }
    let mut header = [0u8; 16];
    if stream.read_exact(&mut header).is_err() {
        return false;
    }
    let length = i32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let op_code = i32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    let Ok(length) = usize::try_from(length) else {
        return false;
    };
    if op_code != OP_MSG || !(16..=16 * 1024 * 1024).contains(&length) {
        return false;
    }
    let mut body = vec![0u8; length - 16];
    if stream.read_exact(&mut body).is_err() {
        return false;
    }
    reply_is_ok(&body)
}

const OP_MSG: i32 = 2013;

/// OP_MSG with one body section `{ping: 1, $db: "admin"}`.
fn ping_message() -> Vec<u8> {
    let mut document = Vec::new();
    document.push(0x10); // int32
    document.extend_from_slice(b"ping\0");
    document.extend_from_slice(&1i32.to_le_bytes());
    document.push(0x02); // string
    document.extend_from_slice(b"$db\0");
    document.extend_from_slice(&6i32.to_le_bytes());
    document.extend_from_slice(b"admin\0");
    document.push(0x00);
    let document_length = i32::try_from(document.len() + 4).unwrap_or(i32::MAX);

    let mut message = Vec::new();
    let total = 16 + 4 + 1 + 4 + document.len();
    message.extend_from_slice(&i32::try_from(total).unwrap_or(i32::MAX).to_le_bytes());
    message.extend_from_slice(&1i32.to_le_bytes()); // request id
    message.extend_from_slice(&0i32.to_le_bytes()); // response to
    message.extend_from_slice(&OP_MSG.to_le_bytes());
    message.extend_from_slice(&0u32.to_le_bytes()); // flag bits
    message.push(0); // section kind 0: body
    message.extend_from_slice(&document_length.to_le_bytes());
    message.extend_from_slice(&document);
    message
}

/// Finds the top-level `ok` field of the reply document (flag bits, section
/// kind 0, BSON) and checks it is 1 (as double or int32).
fn reply_is_ok(body: &[u8]) -> bool {
    // flagBits(4) + kind(1) + document length(4), then elements.
    let Some(elements) = body.get(9..) else {
        return false;
    };
    let mut at = 0;
    while let Some(&kind) = elements.get(at) {
        if kind == 0 {
            return false;
        }
        let Some(name_end) = elements[at + 1..].iter().position(|&b| b == 0) else {
            return false;
        };
        let name = &elements[at + 1..at + 1 + name_end];
        let value = at + 1 + name_end + 1;
        let read4 = |i: usize| {
            elements
                .get(i..i + 4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let size = match kind {
            0x01 | 0x09 | 0x11 | 0x12 => Some(8), // double, datetime, timestamp, int64
            0x10 => Some(4),                      // int32
            0x08 => Some(1),                      // bool
            0x0A => Some(0),                      // null
            0x07 => Some(12),                     // ObjectId
            0x02 => read4(value)
                .and_then(|n| usize::try_from(n).ok())
                .map(|n| 4 + n), // string
            0x03 | 0x04 => read4(value).and_then(|n| usize::try_from(n).ok()), // document, array
            0x05 => read4(value)
                .and_then(|n| usize::try_from(n).ok())
                .map(|n| 5 + n), // binary
            0x13 => Some(16),                     // decimal128
            _ => None,
        };
        if name == b"ok" {
            return match kind {
                0x01 => elements
                    .get(value..value + 8)
                    .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                    .is_some_and(|ok| (ok - 1.0).abs() < f64::EPSILON),
                0x10 => read4(value) == Some(1),
                _ => false,
            };
        }
        let Some(size) = size else {
            return false;
        };
        at = value + size;
    }
    false
}

/// Percent-encodes a query-string value.
pub(crate) fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_message_is_well_formed() {
        let message = ping_message();
        let total = i32::from_le_bytes([message[0], message[1], message[2], message[3]]);
        assert_eq!(usize::try_from(total).expect("positive"), message.len());
        let document_start = 21;
        let document_length = i32::from_le_bytes([
            message[document_start],
            message[document_start + 1],
            message[document_start + 2],
            message[document_start + 3],
        ]);
        assert_eq!(
            usize::try_from(document_length).expect("positive"),
            message.len() - document_start
        );
        assert_eq!(message.last(), Some(&0));
    }

    #[test]
    fn finds_ok_after_other_fields() {
        // {version: "7.0.42", n: 3i32, ok: 1.0} behind flag bits, kind and length.
        let mut doc = vec![0x02];
        doc.extend_from_slice(b"version\0");
        doc.extend_from_slice(&7i32.to_le_bytes());
        doc.extend_from_slice(b"7.0.42\0");
        doc.push(0x10);
        doc.extend_from_slice(b"n\0");
        doc.extend_from_slice(&3i32.to_le_bytes());
        doc.push(0x01);
        doc.extend_from_slice(b"ok\0");
        doc.extend_from_slice(&1.0f64.to_le_bytes());
        doc.push(0);
        let mut body = vec![0, 0, 0, 0, 0];
        body.extend_from_slice(&i32::try_from(doc.len() + 4).expect("small").to_le_bytes());
        body.extend_from_slice(&doc);
        assert!(reply_is_ok(&body));

        let not_ok: Vec<u8> = body
            .iter()
            .copied()
            .take(body.len() - 9)
            .chain(0.0f64.to_le_bytes())
            .chain([0])
            .collect();
        assert!(!reply_is_ok(&not_ok));
    }

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("a+b@example.com"), "a%2Bb%40example.com");
        assert_eq!(url_encode("plain_name-1.x~"), "plain_name-1.x~");
    }
}
