//! An HTTP/1.1 fault-injection proxy in front of a real server (a [`Registry`], a
//! latency [`Proxy`], another fault proxy…). Requests pass through untouched
//! unless a [`Rule`] picks them: by method, path regex and count, each rule
//! injects one [`Fault`]. Counters and a request log tell what happened.
//!
//! ```ignore
//! let fp = FaultProxy::start(&reg.host());
//! let r = fp.add(Rule::new(Fault::Status(503)).method("GET").path("/blobs/").times(2));
//! // … point the client at fp.addr() …
//! assert_eq!(fp.hits(r), 2);
//! ```
//!
//! [`Registry`]: super::Registry
//! [`Proxy`]: super::Proxy

use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use regex::Regex;

use super::http1::{
    self, BodyReader, BodyWriter, Framing, RequestHead, ResponseHead, Server, Upstream,
};

/// What to do to a request picked by a rule.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Reads the request and closes the connection without forwarding it or answering.
    CloseBeforeResponse,
    /// Forwards the request (the server does the work), then closes the connection
    /// without passing the response on: a response lost after an upload succeeded.
    DropResponse,
    /// Passes the response head and `after` bytes of its body (`None`: half of it),
    /// then closes the connection: the client sees a body shorter than announced.
    CloseMidBody { after: Option<u64> },
    /// Answers with this status and a registry-style JSON error without forwarding
    /// (404 gets MANIFEST_UNKNOWN/BLOB_UNKNOWN/NAME_UNKNOWN by path, 401 a Basic challenge).
    Status(u16),
    /// Answers 429 with `Retry-After: N` (when given) and this error code in the body.
    TooManyRequests {
        retry_after: Option<u64>,
        code: String,
    },
    /// Holds the response for `hold` before its head (`after_bytes: None`) or after
    /// that many body bytes, then goes on as if nothing happened.
    Stall {
        hold: Duration,
        after_bytes: Option<u64>,
    },
    /// Flips the lowest bit of the body byte at `offset` (`None`: the middle byte).
    FlipBit { offset: Option<u64> },
    /// Passes only the first `keep` body bytes with consistent framing
    /// (Content-Length rewritten): a complete but short response.
    Truncate { keep: u64 },
}

impl Fault {
    /// 429 with `Retry-After: secs` and body code `DENIED` (not `TOOMANYREQUESTS`).
    pub fn too_many_requests(secs: u64) -> Fault {
        Fault::TooManyRequests {
            retry_after: Some(secs),
            code: "DENIED".into(),
        }
    }
    /// Holds the response head back for `hold`.
    pub fn stall(hold: Duration) -> Fault {
        Fault::Stall {
            hold,
            after_bytes: None,
        }
    }
    /// Holds the rest of the body back for `hold` after `after` bytes.
    pub fn stall_mid_body(after: u64, hold: Duration) -> Fault {
        Fault::Stall {
            hold,
            after_bytes: Some(after),
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Fault::CloseBeforeResponse => "close-before-response",
            Fault::DropResponse => "drop-response",
            Fault::CloseMidBody { .. } => "close-mid-body",
            Fault::Status(_) => "status",
            Fault::TooManyRequests { .. } => "too-many-requests",
            Fault::Stall { .. } => "stall",
            Fault::FlipBit { .. } => "flip-bit",
            Fault::Truncate { .. } => "truncate",
        }
    }
}

/// Picks requests for a fault: every request by default; narrowed by
/// [`method`](Rule::method) and [`path`](Rule::path) (a regex on path and query);
/// [`skip`](Rule::skip) lets the first N matches through, [`times`](Rule::times)
/// limits how often the fault fires (then requests pass again).
#[derive(Clone, Debug)]
pub struct Rule {
    method: Option<String>,
    path: Option<Regex>,
    skip: usize,
    times: Option<usize>,
    fault: Fault,
}

impl Rule {
    pub fn new(fault: Fault) -> Rule {
        Rule {
            method: None,
            path: None,
            skip: 0,
            times: None,
            fault,
        }
    }
    pub fn method(mut self, m: &str) -> Rule {
        self.method = Some(m.to_ascii_uppercase());
        self
    }
    /// `pattern` is a regex searched in the request target (path + query).
    pub fn path(mut self, pattern: &str) -> Rule {
        self.path = Some(Regex::new(pattern).expect("Rule::path: bad regex"));
        self
    }
    pub fn skip(mut self, n: usize) -> Rule {
        self.skip = n;
        self
    }
    pub fn times(mut self, n: usize) -> Rule {
        self.times = Some(n);
        self
    }
    fn matches(&self, req: &RequestHead) -> bool {
        self.method.as_ref().is_none_or(|m| *m == req.method)
            && self.path.as_ref().is_none_or(|p| p.is_match(&req.target))
    }
}

/// Handle returned by [`FaultProxy::add`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuleId(usize);

/// One request as seen by the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxiedRequest {
    /// Client connection number (0-based, in accept order).
    pub conn: u64,
    pub method: String,
    pub target: String,
    /// Status passed to the client; `None` when the connection was closed before a head.
    pub status: Option<u16>,
    /// What the proxy did besides forwarding: the fault applied ([`Fault::name`]),
    /// or the referrers proxy's interception.
    pub action: Option<&'static str>,
    /// Body bytes passed to the client.
    pub bytes: u64,
}

struct RuleState {
    rule: Rule,
    seen: usize,
    hits: usize,
}

#[derive(Default)]
pub(super) struct Shared {
    rules: Mutex<Vec<RuleState>>,
    log: Mutex<Vec<ProxiedRequest>>,
}

impl Shared {
    /// The fault for this request: the first rule that matches and still fires.
    fn pick(&self, req: &RequestHead) -> Option<Fault> {
        let mut rules = self.rules.lock().unwrap();
        for st in rules.iter_mut().filter(|s| s.rule.matches(req)) {
            st.seen += 1;
            if st.seen > st.rule.skip && st.rule.times.is_none_or(|t| st.hits < t) {
                st.hits += 1;
                return Some(st.rule.fault.clone());
            }
        }
        None
    }
    pub(super) fn log(&self, entry: ProxiedRequest) -> usize {
        let mut log = self.log.lock().unwrap();
        log.push(entry);
        log.len() - 1
    }
    pub(super) fn finish(&self, i: usize, status: Option<u16>, bytes: u64) {
        let mut log = self.log.lock().unwrap();
        log[i].status = status;
        log[i].bytes = bytes;
    }
}

pub struct FaultProxy {
    server: Server,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `target` (`host:port`),
    /// one upstream connection per client connection (keep-alive preserved).
    pub fn start(target: &str) -> FaultProxy {
        let shared = Arc::new(Shared::default());
        let (sh, target) = (shared.clone(), target.to_string());
        let server = Server::start(move |client, conn| {
            let _ = serve(client, conn, &target, &sh);
        });
        FaultProxy { server, shared }
    }

    /// `127.0.0.1:PORT` to give to clients instead of the target.
    pub fn addr(&self) -> &str {
        self.server.addr()
    }
    /// Adds a rule after the existing ones (the first matching rule that fires wins).
    pub fn add(&self, rule: Rule) -> RuleId {
        let mut rules = self.shared.rules.lock().unwrap();
        rules.push(RuleState {
            rule,
            seen: 0,
            hits: 0,
        });
        RuleId(rules.len() - 1)
    }
    /// Removes every rule (ids stay valid for [`hits`](Self::hits) until the next `add`).
    pub fn clear_rules(&self) {
        for st in self.shared.rules.lock().unwrap().iter_mut() {
            st.rule.times = Some(0);
        }
    }
    /// How many times the rule's fault fired.
    pub fn hits(&self, id: RuleId) -> usize {
        self.shared.rules.lock().unwrap()[id.0].hits
    }
    /// Client connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.server.connections()
    }
    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<ProxiedRequest> {
        self.shared.log.lock().unwrap().clone()
    }
    /// Requests with this method (`""` = any) whose target contains `substring`.
    pub fn request_count(&self, method: &str, substring: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| method.is_empty() || r.method.eq_ignore_ascii_case(method))
            .filter(|r| r.target.contains(substring))
            .count()
    }
    /// Cuts every open client connection.
    pub fn close_connections(&self) {
        self.server.close_connections();
    }
}

fn serve(client: TcpStream, conn: u64, target: &str, sh: &Shared) -> io::Result<()> {
    let mut cr = BufReader::with_capacity(64 * 1024, client.try_clone()?);
    let mut cw = client;
    let mut up: Option<Upstream> = None;
    while let Some(mut req) = http1::read_request_head(&mut cr)? {
        let fault = sh.pick(&req);
        let entry = sh.log(ProxiedRequest {
            conn,
            method: req.method.clone(),
            target: req.target.clone(),
            status: None,
            action: fault.as_ref().map(Fault::name),
            bytes: 0,
        });
        http1::accept_expect(&mut req, &mut cw)?;
        let keep_going = match &fault {
            Some(Fault::CloseBeforeResponse) => false,
            Some(f @ (Fault::Status(_) | Fault::TooManyRequests { .. })) => {
                drain(&mut cr, &req)?;
                let (head, body) = canned(f, &req);
                sh.finish(entry, Some(head.status), body.len() as u64);
                http1::respond(&mut cw, &req.method, head, &body)?;
                !req.header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            }
            _ => {
                let u = match up.as_mut() {
                    Some(u) => u,
                    None => up.insert(Upstream::connect(target)?),
                };
                let resp = http1::send_upstream(u, &req, &mut cr)?;
                let (status, bytes, keep) = relay(&req, resp, u, &mut cw, fault.as_ref())?;
                sh.finish(entry, status, bytes);
                if !keep {
                    up = None;
                }
                keep
            }
        };
        if !keep_going {
            break;
        }
    }
    let _ = cw.shutdown(Shutdown::Both);
    Ok(())
}

/// Reads and discards a request body that will not be forwarded.
fn drain(cr: &mut impl io::BufRead, req: &RequestHead) -> io::Result<()> {
    io::copy(&mut BodyReader::new(cr, req.framing()), &mut io::sink())?;
    Ok(())
}

fn canned(f: &Fault, req: &RequestHead) -> (ResponseHead, Vec<u8>) {
    let msg = "injected by the kplug test harness fault proxy";
    let mut head;
    let body = match f {
        Fault::TooManyRequests { retry_after, code } => {
            head = ResponseHead::new(429);
            if let Some(s) = retry_after {
                head.set_header("Retry-After", &s.to_string());
            }
            http1::error_body(code, msg)
        }
        Fault::Status(s) => {
            head = ResponseHead::new(*s);
            let code = match s {
                401 => "UNAUTHORIZED",
                403 => "DENIED",
                404 if req.path().contains("/manifests/") => "MANIFEST_UNKNOWN",
                404 if req.path().contains("/blobs/") => "BLOB_UNKNOWN",
                404 => "NAME_UNKNOWN",
                429 => "TOOMANYREQUESTS",
                _ => "UNAVAILABLE",
            };
            if *s == 401 {
                head.set_header("WWW-Authenticate", "Basic realm=\"kplug-fault-proxy\"");
            }
            http1::error_body(code, msg)
        }
        _ => unreachable!(),
    };
    head.set_header("Content-Type", "application/json; charset=utf-8");
    head.set_header("Docker-Distribution-Api-Version", "registry/2.0");
    (head, body)
}

/// Passes the upstream response to the client, applying `fault`. Returns the
/// status passed on, body bytes passed on, and whether both connections stay usable.
pub(super) fn relay(
    req: &RequestHead,
    mut resp: ResponseHead,
    up: &mut Upstream,
    cw: &mut TcpStream,
    fault: Option<&Fault>,
) -> io::Result<(Option<u16>, u64, bool)> {
    let framing = resp.framing(&req.method);
    let len = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    let keep = !http1::closes(req, &resp, framing);
    let mut body = BodyReader::new(&mut up.reader, framing);
    // (cut after this many bytes and close, flip this offset, keep only this many, stall at)
    let (mut cut, mut flip, mut keep_only, mut stall) = (None, None, None, None);
    match fault {
        Some(Fault::DropResponse) => {
            io::copy(&mut body, &mut io::sink())?;
            return Ok((None, 0, false));
        }
        Some(Fault::CloseMidBody { after }) => {
            cut = Some(after.unwrap_or(len.unwrap_or(2) / 2));
        }
        Some(Fault::FlipBit { offset }) => flip = Some(offset.unwrap_or(len.unwrap_or(0) / 2)),
        Some(Fault::Truncate { keep }) => {
            keep_only = Some(*keep);
            if let Some(n) = len {
                resp.set_header("Content-Length", &n.min(*keep).to_string());
            }
        }
        Some(Fault::Stall {
            hold,
            after_bytes: None,
        }) => thread::sleep(*hold),
        Some(Fault::Stall {
            hold,
            after_bytes: Some(n),
        }) => stall = Some((*n, *hold)),
        _ => {}
    }
    http1::write_response_head(cw, &resp)?;
    let mut out = BodyWriter::new(cw, framing);
    let (mut pos, mut sent) = (0u64, 0u64);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = body.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &mut buf[..n];
        if let Some(off) = flip.filter(|o| (pos..pos + n as u64).contains(o)) {
            chunk[(off - pos) as usize] ^= 1;
        }
        // the part of this chunk to pass on
        let mut end = n as u64;
        if let Some(limit) = cut.or(keep_only) {
            end = end.min(limit.saturating_sub(pos));
        }
        if let Some((at, hold)) = stall.filter(|(at, _)| *at < pos + end) {
            let first = at.saturating_sub(pos) as usize;
            out.write(&chunk[..first])?;
            thread::sleep(hold);
            out.write(&chunk[first..end as usize])?;
            stall = None;
        } else {
            out.write(&chunk[..end as usize])?;
        }
        sent += end;
        pos += n as u64;
        if cut.is_some_and(|c| pos >= c) {
            cw_flush_and_close(cw)?;
            return Ok((Some(resp.status), sent, false));
        }
    }
    out.finish()?;
    Ok((Some(resp.status), sent, keep))
}

fn cw_flush_and_close(cw: &mut TcpStream) -> io::Result<()> {
    cw.flush()?;
    let _ = cw.shutdown(Shutdown::Both);
    Ok(())
}
