//! Just enough HTTP/1.1 for the harness's own servers and proxies (fault proxy,
//! token server, referrers proxy): heads parsed by `httparse`, bodies framed by
//! Content-Length or chunked encoding, blocking sockets, one thread per connection.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

const MAX_HEAD: usize = 64 * 1024;

pub type Headers = Vec<(String, String)>;

fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn set_header(headers: &mut Headers, name: &str, value: &str) {
    headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    headers.push((name.to_string(), value.to_string()));
}

#[derive(Clone, Debug)]
pub struct RequestHead {
    pub method: String,
    /// Request target as sent: path and query.
    pub target: String,
    pub headers: Headers,
}

impl RequestHead {
    pub fn new(method: &str, target: &str) -> RequestHead {
        RequestHead {
            method: method.into(),
            target: target.into(),
            headers: vec![],
        }
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    pub fn set_header(&mut self, name: &str, value: &str) {
        set_header(&mut self.headers, name, value)
    }
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
    /// The path without the query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    /// Decoded query parameters, in order (repeated keys kept).
    pub fn query(&self) -> Vec<(String, String)> {
        let q = self.target.split_once('?').map(|(_, q)| q).unwrap_or("");
        form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }
    pub fn framing(&self) -> Framing {
        if is_chunked(&self.headers) {
            Framing::Chunked
        } else {
            Framing::Length(content_length(&self.headers).unwrap_or(0))
        }
    }
    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

#[derive(Clone, Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    pub headers: Headers,
}

impl ResponseHead {
    pub fn new(status: u16) -> ResponseHead {
        ResponseHead {
            status,
            reason: reason(status).into(),
            headers: vec![],
        }
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    pub fn set_header(&mut self, name: &str, value: &str) {
        set_header(&mut self.headers, name, value)
    }
    /// How the body of this response to `method` is delimited.
    pub fn framing(&self, method: &str) -> Framing {
        if method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            Framing::Length(0)
        } else if is_chunked(&self.headers) {
            Framing::Chunked
        } else {
            match content_length(&self.headers) {
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        }
    }
    fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn is_chunked(headers: &Headers) -> bool {
    header(headers, "transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

fn content_length(headers: &Headers) -> Option<u64> {
    header(headers, "content-length").and_then(|v| v.trim().parse().ok())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    /// Response body that ends when the server closes the connection.
    UntilClose,
}

/// Reads a head up to and including the empty line. `None` on a clean EOF
/// before the first byte.
fn read_head_bytes(r: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let n = r.read_until(b'\n', &mut head)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "EOF inside a head",
                ))
            };
        }
        if head.ends_with(b"\r\n\r\n") || head == b"\r\n" {
            if head == b"\r\n" {
                head.clear(); // stray CRLF between requests
                continue;
            }
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
    }
}

fn bad(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

fn owned_headers(hs: &[httparse::Header]) -> Headers {
    hs.iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

pub fn read_request_head(r: &mut impl BufRead) -> io::Result<Option<RequestHead>> {
    let Some(bytes) = read_head_bytes(r)? else {
        return Ok(None);
    };
    let mut hs = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut hs);
    match req.parse(&bytes).map_err(bad)? {
        httparse::Status::Complete(_) => Ok(Some(RequestHead {
            method: req.method.unwrap_or("").to_string(),
            target: req.path.unwrap_or("").to_string(),
            headers: owned_headers(req.headers),
        })),
        httparse::Status::Partial => Err(bad("partial request head")),
    }
}

pub fn read_response_head(r: &mut impl BufRead) -> io::Result<ResponseHead> {
    let bytes = read_head_bytes(r)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        )
    })?;
    let mut hs = [httparse::EMPTY_HEADER; 128];
    let mut resp = httparse::Response::new(&mut hs);
    match resp.parse(&bytes).map_err(bad)? {
        httparse::Status::Complete(_) => Ok(ResponseHead {
            status: resp.code.unwrap_or(0),
            reason: resp.reason.unwrap_or("").to_string(),
            headers: owned_headers(resp.headers),
        }),
        httparse::Status::Partial => Err(bad("partial response head")),
    }
}

fn write_headers(w: &mut impl Write, first_line: &str, headers: &Headers) -> io::Result<()> {
    let mut out = format!("{first_line}\r\n");
    for (n, v) in headers {
        out += &format!("{n}: {v}\r\n");
    }
    out += "\r\n";
    w.write_all(out.as_bytes())?;
    w.flush()
}

pub fn write_request_head(w: &mut impl Write, h: &RequestHead) -> io::Result<()> {
    write_headers(
        w,
        &format!("{} {} HTTP/1.1", h.method, h.target),
        &h.headers,
    )
}

pub fn write_response_head(w: &mut impl Write, h: &ResponseHead) -> io::Result<()> {
    write_headers(
        w,
        &format!("HTTP/1.1 {} {}", h.status, h.reason),
        &h.headers,
    )
}

/// The decoded bytes of one body, read from a connection.
pub struct BodyReader<'a, R: BufRead> {
    r: &'a mut R,
    framing: Framing,
    /// Bytes left in the current chunk or in the whole Content-Length body.
    left: u64,
    done: bool,
}

impl<'a, R: BufRead> BodyReader<'a, R> {
    pub fn new(r: &'a mut R, framing: Framing) -> Self {
        let (left, done) = match framing {
            Framing::Length(n) => (n, n == 0),
            _ => (0, false),
        };
        BodyReader {
            r,
            framing,
            left,
            done,
        }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut l = Vec::new();
        if self.r.read_until(b'\n', &mut l)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "EOF in chunked body",
            ));
        }
        Ok(String::from_utf8_lossy(&l).trim().to_string())
    }

    /// Starts the next chunk; false at the last (empty) one.
    fn next_chunk(&mut self) -> io::Result<bool> {
        let line = self.line()?;
        let size = line.split(';').next().unwrap_or("").trim();
        self.left = u64::from_str_radix(size, 16).map_err(bad)?;
        if self.left == 0 {
            while !self.line()?.is_empty() {} // trailers
            return Ok(false);
        }
        Ok(true)
    }
}

impl<R: BufRead> Read for BodyReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        match self.framing {
            Framing::UntilClose => {
                let n = self.r.read(buf)?;
                self.done = n == 0;
                Ok(n)
            }
            Framing::Length(_) => {
                let want = buf.len().min(self.left as usize);
                let n = self.r.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "body cut short",
                    ));
                }
                self.left -= n as u64;
                self.done = self.left == 0;
                Ok(n)
            }
            Framing::Chunked => {
                if self.left == 0 && !self.next_chunk()? {
                    self.done = true;
                    return Ok(0);
                }
                let want = buf.len().min(self.left as usize);
                let n = self.r.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "chunk cut short",
                    ));
                }
                self.left -= n as u64;
                if self.left == 0 {
                    self.line()?; // CRLF after the chunk data
                }
                Ok(n)
            }
        }
    }
}

/// Writes body bytes in the framing announced by the head already sent.
pub struct BodyWriter<'a, W: Write> {
    w: &'a mut W,
    chunked: bool,
}

impl<'a, W: Write> BodyWriter<'a, W> {
    pub fn new(w: &'a mut W, framing: Framing) -> Self {
        BodyWriter {
            w,
            chunked: framing == Framing::Chunked,
        }
    }
    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        if self.chunked {
            write!(self.w, "{:x}\r\n", data.len())?;
            self.w.write_all(data)?;
            self.w.write_all(b"\r\n")
        } else {
            self.w.write_all(data)
        }
    }
    pub fn finish(self) -> io::Result<()> {
        if self.chunked {
            self.w.write_all(b"0\r\n\r\n")?;
        }
        self.w.flush()
    }
}

pub fn read_body(r: &mut impl BufRead, framing: Framing, limit: u64) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    BodyReader::new(r, framing)
        .take(limit + 1)
        .read_to_end(&mut body)?;
    if body.len() as u64 > limit {
        return Err(bad(format!("body over {limit} bytes")));
    }
    Ok(body)
}

/// Sends a complete response with a Content-Length body (omitted for HEAD).
pub fn respond(
    w: &mut impl Write,
    method: &str,
    mut head: ResponseHead,
    body: &[u8],
) -> io::Result<()> {
    head.headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("transfer-encoding"));
    head.set_header("Content-Length", &body.len().to_string());
    write_response_head(w, &head)?;
    if !method.eq_ignore_ascii_case("HEAD") {
        w.write_all(body)?;
    }
    w.flush()
}

/// A registry-style JSON error body: `{"errors":[{"code":…,"message":…}]}`.
pub fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::json!({"errors": [{"code": code, "message": message, "detail": null}]})
        .to_string()
        .into_bytes()
}

/// A keep-alive connection to an upstream server.
pub struct Upstream {
    pub reader: BufReader<TcpStream>,
    pub writer: TcpStream,
}

impl Upstream {
    pub fn connect(addr: &str) -> io::Result<Upstream> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        Ok(Upstream {
            reader: BufReader::with_capacity(64 * 1024, s.try_clone()?),
            writer: s,
        })
    }
}

/// One request on a fresh connection (`Connection: close`): status head and whole body.
pub fn roundtrip(
    addr: &str,
    mut head: RequestHead,
    body: &[u8],
) -> io::Result<(ResponseHead, Vec<u8>)> {
    let mut up = Upstream::connect(addr)?;
    if head.header("host").is_none() {
        head.set_header("Host", addr);
    }
    head.set_header("Connection", "close");
    head.remove_header("transfer-encoding");
    if !body.is_empty() || !matches!(head.method.as_str(), "GET" | "HEAD" | "DELETE") {
        head.set_header("Content-Length", &body.len().to_string());
    }
    write_request_head(&mut up.writer, &head)?;
    up.writer.write_all(body)?;
    up.writer.flush()?;
    let resp = read_response_head(&mut up.reader)?;
    let framing = resp.framing(&head.method);
    let body = read_body(&mut up.reader, framing, 64 << 20)?;
    Ok((resp, body))
}

/// Forwards one request (head already read from the client) to `up`, streaming its
/// body, and returns the upstream's response head (interim 1xx answers skipped).
pub fn send_upstream(
    up: &mut Upstream,
    req: &RequestHead,
    client: &mut impl BufRead,
) -> io::Result<ResponseHead> {
    write_request_head(&mut up.writer, req)?;
    let framing = req.framing();
    let mut body = BodyReader::new(client, framing);
    let mut out = BodyWriter::new(&mut up.writer, framing);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write(&buf[..n])?;
    }
    out.finish()?;
    loop {
        let resp = read_response_head(&mut up.reader)?;
        if !(100..200).contains(&resp.status) {
            return Ok(resp);
        }
    }
}

/// Whether the connection must close after this exchange.
pub fn closes(req: &RequestHead, resp: &ResponseHead, framing: Framing) -> bool {
    req.wants_close() || resp.wants_close() || framing == Framing::UntilClose
}

/// Answers `Expect: 100-continue` at once and strips it, so the upstream never
/// has to (the proxies stream request bodies anyway).
pub fn accept_expect(req: &mut RequestHead, client: &mut impl Write) -> io::Result<()> {
    if req
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    {
        req.remove_header("expect");
        client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        client.flush()?;
    }
    Ok(())
}

#[derive(Default)]
struct ServerShared {
    stop: AtomicBool,
    connections: AtomicU64,
    open: Mutex<HashMap<u64, TcpStream>>,
}

/// A loopback listener that runs `handler(connection, id)` on a thread per
/// connection. Drop stops accepting and cuts every open connection.
pub struct Server {
    addr: String,
    shared: Arc<ServerShared>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    pub fn start<F>(handler: F) -> Server
    where
        F: Fn(TcpStream, u64) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(ServerShared::default());
        let (sh, handler) = (shared.clone(), Arc::new(handler));
        let accept = thread::spawn(move || {
            for stream in listener.incoming() {
                if sh.stop.load(SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let _ = stream.set_nodelay(true);
                let id = sh.connections.fetch_add(1, SeqCst);
                if let Ok(s) = stream.try_clone() {
                    sh.open.lock().unwrap().insert(id, s);
                }
                let (sh, handler) = (sh.clone(), handler.clone());
                thread::spawn(move || {
                    handler(stream, id);
                    sh.open.lock().unwrap().remove(&id);
                });
            }
        });
        Server {
            addr,
            shared,
            accept: Some(accept),
        }
    }
    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> &str {
        &self.addr
    }
    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(SeqCst)
    }
    /// Cuts every open client connection.
    pub fn close_connections(&self) {
        for s in self.shared.open.lock().unwrap().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        let _ = TcpStream::connect(&self.addr); // wakes up accept()
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.close_connections();
    }
}
