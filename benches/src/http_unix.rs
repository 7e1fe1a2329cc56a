//! A minimal HTTP/1.1 client over a Unix socket, enough to drive a Firecracker-style API
//! (`PUT` with a JSON body, one request per connection, `Connection: close`). RFC 9112: a
//! response is a status line, header fields, an empty line, then `Content-Length` bytes.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{method} {uri}: {source}")]
    Io {
        method: String,
        uri: String,
        #[source]
        source: io::Error,
    },
    #[error("{method} {uri}: malformed response: {what}")]
    Malformed {
        method: String,
        uri: String,
        what: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends one request on a fresh connection and reads the whole response.
pub fn request(
    socket: &Path,
    method: &str,
    uri: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    let stream = UnixStream::connect(socket).map_err(|source| HttpError::Connect {
        path: socket.display().to_string(),
        source,
    })?;
    let io_err = |source| HttpError::Io {
        method: method.to_string(),
        uri: uri.to_string(),
        source,
    };
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {uri} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut writer = &stream;
    writer
        .write_all([head.as_bytes(), body.as_bytes()].concat().as_slice())
        .map_err(io_err)?;
    read_response(BufReader::new(&stream)).map_err(|e| match e {
        ReadError::Io(source) => io_err(source),
        ReadError::Malformed(what) => HttpError::Malformed {
            method: method.to_string(),
            uri: uri.to_string(),
            what,
        },
    })
}

#[derive(Debug)]
enum ReadError {
    Io(io::Error),
    Malformed(String),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Io(e)
    }
}

fn read_response(mut reader: impl BufRead) -> Result<Response, ReadError> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let status = match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => code
            .parse::<u16>()
            .map_err(|_| ReadError::Malformed(format!("status line {line:?}")))?,
        _ => return Err(ReadError::Malformed(format!("status line {line:?}"))),
    };
    let mut length: Option<usize> = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(ReadError::Malformed(
                "headers end without an empty line".into(),
            ));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse().map_err(|_| {
                    ReadError::Malformed(format!("Content-Length {:?}", value.trim()))
                })?);
            }
        }
    }
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            reader.read_exact(&mut body)?;
        }
        // No length (and we asked for `Connection: close`): the body runs to the end. 204 and
        // 304 have no body at all (RFC 9112 §6.3).
        None if status == 204 || status == 304 => {}
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixListener;

    #[test]
    fn parses_responses_with_and_without_length() {
        let r = read_response(&b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nhello"[..])
            .unwrap();
        assert_eq!((r.status, r.body.as_str()), (400, "hello"));
        let r = read_response(&b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n"[..]).unwrap();
        assert_eq!((r.status, r.body.as_str()), (204, ""));
        assert!(r.is_success());
        assert!(read_response(&b"garbage\r\n\r\n"[..]).is_err());
        assert!(read_response(&b"HTTP/1.1 200 OK\r\n"[..]).is_err());
    }

    #[test]
    fn talks_to_a_real_unix_socket_server() {
        let dir = std::env::temp_dir().join(format!("wisp-bench-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.strip_prefix("Content-Length: ") {
                    length = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
            (head, String::from_utf8(body).unwrap())
        });
        let body = r#"{"action_type":"InstanceStart"}"#;
        let r = request(&path, "PUT", "/actions", Some(body), Duration::from_secs(5)).unwrap();
        assert_eq!(r.status, 204);
        let (head, got) = server.join().unwrap();
        assert!(head.starts_with("PUT /actions HTTP/1.1\r\n"), "{head}");
        assert_eq!(got, body);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
