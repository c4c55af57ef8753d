//! HTTP to registries: one connection pool per run, authentication on challenge,
//! retries, timeouts, and errors that say what to do.
//!
//! - **One client.** Every store of a run shares one `reqwest::Client` per TLS setting
//!   (connection reuse, HTTP/2 where the registry offers it by ALPN) and one [`Session`]
//!   per registry (what authentication it asked for, tokens per scope).
//! - **No probe.** A request goes out as it is; a `401` with `WWW-Authenticate` is
//!   answered (Basic with the stored credentials, Bearer with a token for the request's
//!   scope, fetched once per scope) and the request sent again. An open registry never
//!   sees anything but the requests themselves.
//! - **Retries** for idempotent requests: connect errors, a connection closed before any
//!   response, `429` (waiting what `Retry-After` says, capped) and `5xx`. Certificate
//!   errors are never retried. Retries are logged at info level (`-v`).
//! - **Timeouts**: `--timeout` bounds connecting and waiting for a response head;
//!   `--stall-timeout` bounds any wait for the next bytes of a transfer, either way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode};

use super::{Options, Result};
use crate::error::StoreError;
use crate::oci::auth::{Challenge, Credential};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_STALL: Duration = Duration::from_secs(60);
pub const DEFAULT_RETRIES: u32 = 4;
/// The longest `Retry-After` honoured; a registry asking more gets this.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);
/// Error bodies are read for their message, never more than this.
const ERROR_BODY_CAP: usize = 64 << 10;

/// Is `host` a loopback name (plain HTTP by default, as docker and go-containerregistry do)?
pub fn is_loopback(host: &str) -> bool {
    let h = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    h == "localhost" || h == "[::1]" || h == "::1" || h.starts_with("127.")
}

/// How to reach one registry host, from the global and per-host options.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Reach {
    plain_http: bool,
    insecure: bool,
}

fn reach(host: &str, opts: &Options) -> Reach {
    let per = opts.hosts.get(host);
    let insecure = opts.insecure || per.is_some_and(|p| p.insecure);
    let plain_http = match per {
        Some(p) if p.plain_http => true,
        Some(p) if p.tls => false,
        _ if opts.plain_http => true,
        _ if !opts.ca_files.is_empty() || opts.insecure => false,
        _ => is_loopback(host),
    };
    Reach {
        plain_http,
        insecure,
    }
}

/// The `--ca-file` PEMs (global and per host: all of them are trusted for every host).
fn ca_certificates(opts: &Options) -> Result<Vec<reqwest::Certificate>> {
    let mut files: Vec<&std::path::PathBuf> = opts.ca_files.iter().collect();
    files.extend(opts.hosts.values().flat_map(|h| h.ca_files.iter()));
    files.sort();
    files.dedup();
    let mut out = Vec::new();
    for p in files {
        let data = std::fs::read(p).map_err(|e| {
            StoreError::Config(format!("cannot read --ca-file {}: {e}", p.display()))
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&data)
            .ok()
            .filter(|c| !c.is_empty());
        match certs {
            Some(c) => out.extend(c),
            None => {
                return Err(StoreError::Config(format!(
                    "--ca-file {} holds no PEM certificate",
                    p.display()
                )))
            }
        }
    }
    Ok(out)
}

type ClientKey = (bool, Vec<std::path::PathBuf>, Duration);
static CLIENTS: LazyLock<Mutex<HashMap<ClientKey, reqwest::Client>>> =
    LazyLock::new(Default::default);

/// The run's client for these TLS settings (built once, then shared: one pool).
fn client(opts: &Options, insecure: bool, connect: Duration) -> Result<reqwest::Client> {
    let mut cas: Vec<_> = opts.ca_files.clone();
    cas.extend(opts.hosts.values().flat_map(|h| h.ca_files.iter().cloned()));
    cas.sort();
    cas.dedup();
    let key = (insecure, cas, connect);
    let mut map = CLIENTS.lock().expect("client pool lock");
    if let Some(c) = map.get(&key) {
        return Ok(c.clone());
    }
    let c = reqwest::Client::builder()
        .user_agent(concat!("kplug/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(connect)
        .tls_certs_merge(ca_certificates(opts)?)
        .danger_accept_invalid_certs(insecure)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        // Large windows so that one HTTP/2 stream can fill a fast link.
        .http2_initial_stream_window_size(4 << 20)
        .http2_initial_connection_window_size(8 << 20)
        .build()
        .map_err(|e| StoreError::Config(format!("configuring the HTTP client: {}", chain(&e))))?;
    map.insert(key, c.clone());
    Ok(c)
}

/// What a registry asked for, once it did.
#[derive(Debug, Clone)]
enum AuthState {
    /// Nothing asked yet: requests go out without credentials.
    Open,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// One registry host for the whole run: shared by every store that talks to it.
pub struct Session {
    /// `host[:port]` as addressed.
    pub host: String,
    /// `https://host` or `http://host`.
    pub base: String,
    /// Registry name for credential lookup (`docker.io` for Docker Hub).
    registry: String,
    client: reqwest::Client,
    pub timeout: Duration,
    pub stall: Duration,
    retries: u32,
    /// `Some(c)`: these credentials, not the stored ones (login).
    explicit: Option<Option<Credential>>,
    creds: tokio::sync::OnceCell<Option<Credential>>,
    state: Mutex<AuthState>,
    tokens: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<String>>>>>,
    started: Instant,
    /// Set when a request ran out of retries without reaching the registry: later
    /// requests then fail at their first connection error instead of each waiting
    /// through its own retries (a dead registry is reported in seconds, not minutes).
    down: std::sync::atomic::AtomicBool,
    /// Does the registry answer `/v2/<name>/referrers/<digest>`? 0 unknown, 1 yes, 2 no.
    pub referrers_api: std::sync::atomic::AtomicU8,
}

static SESSIONS: LazyLock<Mutex<HashMap<String, Arc<Session>>>> = LazyLock::new(Default::default);

impl Session {
    /// The run's session for `host` (created on first use).
    pub fn get(registry: &str, host: &str, opts: &Options) -> Result<Arc<Session>> {
        let r = reach(host, opts);
        let key = format!(
            "{host} {} {} {:?} {:?} {:?}",
            r.plain_http, r.insecure, opts.timeout, opts.stall_timeout, opts.retries
        );
        if let Some(s) = SESSIONS.lock().expect("sessions lock").get(&key) {
            return Ok(s.clone());
        }
        let s = Arc::new(Session::new(registry, host, opts, None)?);
        Ok(SESSIONS
            .lock()
            .expect("sessions lock")
            .entry(key)
            .or_insert(s)
            .clone())
    }

    /// A session of its own, with the given credentials instead of the stored ones.
    pub fn new(
        registry: &str,
        host: &str,
        opts: &Options,
        explicit: Option<Option<Credential>>,
    ) -> Result<Session> {
        let r = reach(host, opts);
        let timeout = opts.timeout.unwrap_or(DEFAULT_TIMEOUT);
        Ok(Session {
            host: host.to_string(),
            base: format!("{}://{host}", if r.plain_http { "http" } else { "https" }),
            registry: registry.to_string(),
            client: client(opts, r.insecure, timeout)?,
            timeout,
            stall: opts.stall_timeout.unwrap_or(DEFAULT_STALL),
            retries: opts.retries.unwrap_or(DEFAULT_RETRIES),
            explicit,
            creds: tokio::sync::OnceCell::new(),
            state: Mutex::new(AuthState::Open),
            tokens: Mutex::new(HashMap::new()),
            started: Instant::now(),
            down: std::sync::atomic::AtomicBool::new(false),
            referrers_api: std::sync::atomic::AtomicU8::new(0),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn credentials(&self) -> Result<Option<Credential>> {
        if let Some(c) = &self.explicit {
            return Ok(c.clone());
        }
        let registry = self.registry.clone();
        self.creds
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || crate::oci::auth::credentials_for(&registry))
                    .await
                    .map_err(|e| StoreError::Transport(e.to_string()))?
                    .map_err(StoreError::from)
            })
            .await
            .cloned()
    }

    fn millis(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

/// What a request needs and says about itself.
pub struct Req {
    pub method: Method,
    pub url: String,
    pub accept: Option<String>,
    pub content_type: Option<String>,
    /// `Range: bytes=N-` (resuming a blob).
    pub range_from: Option<u64>,
    /// Token scope (`repository:NAME:pull`, space-separated for several).
    pub scope: String,
    /// For messages: `fetching manifest 127.0.0.1:5000/kong/hello:1`.
    pub what: String,
    /// Safe to send again after a failure (GET, HEAD, a manifest PUT, an upload POST).
    pub idempotent: bool,
}

impl Req {
    pub fn new(method: Method, url: String, scope: String, what: String) -> Req {
        let idempotent = method != Method::PATCH;
        Req {
            method,
            url,
            accept: None,
            content_type: None,
            range_from: None,
            scope,
            what,
            idempotent,
        }
    }
}

/// A request body, made anew for each attempt.
pub enum Body {
    Empty,
    Bytes(Bytes),
    /// Streamed with a known length; the watchdog sees its progress.
    Stream(super::Reader, u64),
}

pub type MakeBody<'a> = &'a (dyn Fn() -> Result<Body> + Sync);

pub fn no_body() -> Result<Body> {
    Ok(Body::Empty)
}

/// Why an attempt failed before a response arrived.
#[derive(Debug)]
enum Failure {
    Refused,
    Certificate(String),
    NotTls,
    HeadTimeout,
    Stalled,
    Closed(String),
    Connect(String),
    Other(String),
    /// Already a store error (auth, config): returned as is.
    Store(StoreError),
}

impl Failure {
    fn transient(&self) -> bool {
        matches!(
            self,
            Failure::Refused
                | Failure::HeadTimeout
                | Failure::Stalled
                | Failure::Closed(_)
                | Failure::Connect(_)
        )
    }

    fn into_error(self, s: &Session, what: &str) -> StoreError {
        let host = &s.host;
        StoreError::Transport(match self {
            Failure::Refused => format!(
                "{what}: cannot connect to {host}: connection refused; is the registry running? wrong port?"
            ),
            Failure::Certificate(d) => {
                return StoreError::Transport(format!(
                    "{what}: the TLS certificate of {host} is not trusted ({d}); give the CA that signed it with --ca-file PEM (or, only to test, --insecure)"
                ))
            }
            Failure::NotTls => format!(
                "{what}: {host} does not speak TLS on this port; use --plain-http for a plain-HTTP registry"
            ),
            Failure::HeadTimeout => format!(
                "{what}: no answer from {host} within {}s (--timeout)",
                s.timeout.as_secs_f32()
            ),
            Failure::Stalled => format!(
                "{what}: no data from {host} for {}s (--stall-timeout)",
                s.stall.as_secs_f32()
            ),
            Failure::Closed(d) => format!("{what}: {host} closed the connection {d}"),
            Failure::Connect(d) => format!("{what}: cannot connect to {host}: {d}"),
            Failure::Other(d) => format!("{what}: {d}"),
            Failure::Store(e) => return e,
        })
    }
}

/// The whole cause chain of an error, `: `-separated, without repeats.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        let s = x.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = x.source();
    }
    parts.join(": ")
}

fn classify(e: &reqwest::Error) -> Failure {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut closed = false;
    while let Some(x) = cur {
        // io::Error's source() skips the error it wraps: look inside, however deep.
        let mut layers = vec![x];
        while let Some(inner) = layers
            .last()
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .and_then(|io| io.get_ref())
        {
            layers.push(inner);
        }
        for t in layers {
            if let Some(t) = t.downcast_ref::<rustls::Error>() {
                return match t {
                    rustls::Error::InvalidCertificate(c) => Failure::Certificate(format!("{c:?}")),
                    rustls::Error::InvalidMessage(_) => Failure::NotTls,
                    other => Failure::Other(format!("TLS: {other}")),
                };
            }
        }
        if let Some(io) = x.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return Failure::Refused,
                ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => closed = true,
                _ => {}
            }
        }
        if let Some(h) = x.downcast_ref::<hyper::Error>() {
            closed |= h.is_incomplete_message() || h.is_canceled();
        }
        cur = x.source();
    }
    if e.is_timeout() {
        Failure::HeadTimeout
    } else if e.is_connect() {
        Failure::Connect(chain(e))
    } else if closed {
        Failure::Closed(
            match e.is_body() || e.is_decode() {
                true => "in the middle of the response body",
                false => "before answering",
            }
            .to_string(),
        )
    } else {
        Failure::Other(chain(e))
    }
}

/// The last time a streamed body moved, for the stall watchdog.
struct Progress(AtomicU64);

fn retryable_status(s: StatusCode) -> bool {
    s == StatusCode::TOO_MANY_REQUESTS || matches!(s.as_u16(), 500 | 502 | 503 | 504)
}

/// `Retry-After`: delay-seconds or an HTTP date, capped.
fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    let d = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            (when.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .unwrap_or(Duration::ZERO)
        }
    };
    Some(d.min(RETRY_AFTER_CAP))
}

fn backoff(attempt: u32) -> Duration {
    let base = 200u64 << attempt.min(5);
    let jitter = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0) as u64)
        % (base / 2 + 1);
    Duration::from_millis((base + jitter).min(5000))
}

impl Session {
    /// Send a request: authenticate on challenge, retry what may be retried. Any status
    /// comes back as a response (after retries for 429/5xx); callers map it.
    pub async fn send(&self, r: &Req, body: MakeBody<'_>) -> Result<Response> {
        let mut attempt = 0;
        loop {
            let res = self.authenticated(r, body).await;
            let (delay, why) = match &res {
                Ok(resp) if retryable_status(resp.status()) => (
                    retry_after(resp).unwrap_or_else(|| backoff(attempt)),
                    format!("HTTP {}", resp.status()),
                ),
                Ok(_) => {
                    self.down.store(false, Ordering::Relaxed);
                    return Ok(res.expect("ok"));
                }
                Err(f) if f.transient() => (backoff(attempt), format!("{f:?}")),
                Err(_) => return Err(res.expect_err("err").into_error(self, &r.what)),
            };
            let unreachable = res.is_err();
            let limit = match unreachable && self.down.load(Ordering::Relaxed) {
                true => 0,
                false => self.retries,
            };
            if !r.idempotent || attempt >= limit {
                if unreachable {
                    self.down.store(true, Ordering::Relaxed);
                }
                return res.map_err(|f| f.into_error(self, &r.what));
            }
            attempt += 1;
            tracing::info!(
                "{}: {why}; retry {attempt}/{} in {:.1}s",
                r.what,
                self.retries,
                delay.as_secs_f32()
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// One attempt, answering at most one authentication challenge.
    async fn authenticated(
        &self,
        r: &Req,
        body: MakeBody<'_>,
    ) -> std::result::Result<Response, Failure> {
        let mut answered = false;
        loop {
            let auth = self.authorization(&r.scope).await.map_err(Failure::Store)?;
            let resp = self.attempt(r, body, auth.as_deref()).await?;
            if resp.status() != StatusCode::UNAUTHORIZED || answered {
                return Ok(resp);
            }
            let challenge = resp
                .headers()
                .get_all(reqwest::header::WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(Challenge::parse);
            let Some(ch) = challenge else {
                return Ok(resp);
            };
            if !self
                .learn(ch, &r.scope, auth.as_deref())
                .await
                .map_err(Failure::Store)?
            {
                return Ok(resp);
            }
            answered = true;
        }
    }

    /// Record a challenge; `false` when there is nothing new to answer it with.
    async fn learn(&self, ch: Challenge, scope: &str, sent: Option<&str>) -> Result<bool> {
        match ch {
            Challenge::Basic => {
                *self.state.lock().expect("auth lock") = AuthState::Basic;
                let creds = self.credentials().await?;
                Ok(creds.is_some_and(|c| sent != Some(c.header().as_str())))
            }
            Challenge::Bearer { realm, service, .. } => {
                *self.state.lock().expect("auth lock") = AuthState::Bearer { realm, service };
                // A rejected token (expired, or scoped too narrowly) is fetched anew.
                let slot = self.token_slot(scope);
                let mut t = slot.lock().await;
                if let (Some(tok), Some(s)) = (t.as_ref(), sent) {
                    if s.ends_with(tok.as_str()) {
                        *t = None;
                    }
                }
                Ok(true)
            }
        }
    }

    fn token_slot(&self, scope: &str) -> Arc<tokio::sync::Mutex<Option<String>>> {
        self.tokens
            .lock()
            .expect("token lock")
            .entry(scope.to_string())
            .or_default()
            .clone()
    }

    /// The `Authorization` value for a request with this scope, if the registry asked.
    async fn authorization(&self, scope: &str) -> Result<Option<String>> {
        let state = self.state.lock().expect("auth lock").clone();
        match state {
            AuthState::Open => Ok(None),
            AuthState::Basic => Ok(self.credentials().await?.map(|c| c.header())),
            AuthState::Bearer { realm, service } => {
                let slot = self.token_slot(scope);
                let mut t = slot.lock().await;
                if t.is_none() {
                    *t = Some(self.fetch_token(&realm, service.as_deref(), scope).await?);
                }
                Ok(t.as_ref().map(|t| format!("Bearer {t}")))
            }
        }
    }

    /// Docker's token flow: `GET realm?service=…&scope=…`, with the stored credentials
    /// as Basic when there are some (anonymous tokens otherwise).
    pub(crate) async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<String> {
        let mut url = reqwest::Url::parse(realm).map_err(|e| {
            StoreError::Auth(format!(
                "{} sent an unusable token realm {realm:?}: {e}",
                self.host
            ))
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scope.split(' ').filter(|s| !s.is_empty()) {
                q.append_pair("scope", s);
            }
        }
        let creds = self.credentials().await?;
        let what = format!(
            "getting a token for {} from {}",
            self.host,
            url.host_str().unwrap_or(realm)
        );
        let mut rb = self.client.get(url.clone());
        if let Some(c) = &creds {
            rb = rb.header(AUTHORIZATION, c.header());
        }
        let resp = tokio::time::timeout(self.timeout, rb.send())
            .await
            .map_err(|_| Failure::HeadTimeout.into_error(self, &what))?
            .map_err(|e| classify(&e).into_error(self, &what))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let who = match &creds {
                Some(Credential::Basic { user, .. }) => format!("the credentials of {user}"),
                None => "anonymous access".to_string(),
            };
            return Err(StoreError::Auth(format!(
                "{what}: the token server refused {who} (HTTP {status}); check them with `kplug login {}`",
                self.registry
            )));
        }
        if !status.is_success() {
            return Err(StoreError::Auth(format!("{what}: HTTP {status}")));
        }
        let body = read_capped(resp, ERROR_BODY_CAP, self.stall)
            .await
            .map_err(|f| f.into_error(self, &what))?;
        #[derive(serde::Deserialize)]
        struct Tok {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: Tok = serde_json::from_slice(&body)
            .map_err(|e| StoreError::Auth(format!("{what}: not a token response ({e})")))?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| StoreError::Auth(format!("{what}: the answer holds no token")))
    }

    /// Send once, with timeouts: the response head within `--timeout` for requests
    /// without a streamed body; a streamed body may take as long as it keeps moving.
    async fn attempt(
        &self,
        r: &Req,
        body: MakeBody<'_>,
        auth: Option<&str>,
    ) -> std::result::Result<Response, Failure> {
        let mut rb = self.client.request(r.method.clone(), &r.url);
        if let Some(a) = &r.accept {
            rb = rb.header(ACCEPT, a);
        }
        if let Some(ct) = &r.content_type {
            rb = rb.header(CONTENT_TYPE, ct);
        }
        if let Some(n) = r.range_from {
            rb = rb.header(reqwest::header::RANGE, format!("bytes={n}-"));
        }
        if let Some(a) = auth {
            rb = rb.header(AUTHORIZATION, a);
        }
        let progress = match body().map_err(Failure::Store)? {
            Body::Empty => None,
            Body::Bytes(b) => {
                rb = rb.body(b);
                None
            }
            Body::Stream(reader, len) => {
                let p = Arc::new(Progress(AtomicU64::new(self.millis())));
                rb = rb
                    .header(CONTENT_LENGTH, HeaderValue::from(len))
                    .body(self.watched_body(reader, p.clone()));
                Some(p)
            }
        };
        let sent = rb.send();
        let res = match progress {
            None => tokio::time::timeout(self.timeout, sent)
                .await
                .map_err(|_| Failure::HeadTimeout)?,
            Some(p) => tokio::select! {
                r = sent => r,
                _ = self.watchdog(&p) => return Err(Failure::Stalled),
            },
        };
        res.map_err(|e| classify(&e))
    }

    fn watched_body(&self, reader: super::Reader, p: Arc<Progress>) -> reqwest::Body {
        let started = self.started;
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20).map(move |c| {
            p.0.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            c
        });
        reqwest::Body::wrap_stream(stream)
    }

    /// Resolves once the body has not moved for the stall timeout.
    async fn watchdog(&self, p: &Progress) {
        let stall = self.stall.as_millis() as u64;
        loop {
            let idle = self.millis().saturating_sub(p.0.load(Ordering::Relaxed));
            if idle >= stall {
                return;
            }
            tokio::time::sleep(Duration::from_millis((stall - idle).max(10))).await;
        }
    }

    /// The error for a response that is not what was asked for.
    pub async fn status_error(&self, resp: Response, what: &str) -> StoreError {
        let status = resp.status();
        let body = read_capped(resp, ERROR_BODY_CAP, self.stall)
            .await
            .unwrap_or_default();
        let detail = error_detail(&body);
        let codes = |c: &str| detail.0.iter().any(|x| x == c);
        let msg = if detail.1.is_empty() {
            format!("{what}: HTTP {status}")
        } else {
            format!("{what}: HTTP {status}: {}", detail.1)
        };
        match status.as_u16() {
            401 | 403 => StoreError::Auth(format!(
                "{msg}; check the credentials (`kplug login {} -u USER --password-stdin`, or DOCKER_CONFIG / REGISTRY_AUTH_FILE)",
                self.registry
            )),
            404 => StoreError::NotFound(format!("{msg}; check the repository and tag (`kplug list-tags REPO`)")),
            400 if String::from_utf8_lossy(&body).contains("HTTP request to an HTTPS server") => {
                StoreError::Config(format!(
                    "{what}: {} speaks HTTPS, not plain HTTP: drop --plain-http (and give --ca-file if its certificate is private)",
                    self.host
                ))
            }
            _ if codes("DIGEST_INVALID") || codes("SIZE_INVALID") => StoreError::Integrity(msg),
            _ => StoreError::Transport(msg),
        }
    }
}

/// `(codes, messages)` from a distribution error envelope, escaped for the terminal.
fn error_detail(body: &[u8]) -> (Vec<String>, String) {
    #[derive(serde::Deserialize)]
    struct Env {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        code: Option<String>,
        message: Option<String>,
    }
    match serde_json::from_slice::<Env>(body) {
        Ok(env) => {
            let codes = env.errors.iter().filter_map(|e| e.code.clone()).collect();
            let msgs: Vec<String> = env
                .errors
                .iter()
                .take(3)
                .map(|e| {
                    let m = e.message.as_deref().or(e.code.as_deref()).unwrap_or("");
                    crate::progress::escape(&m.chars().take(300).collect::<String>())
                })
                .collect();
            (codes, msgs.join("; "))
        }
        Err(_) => (Vec::new(), String::new()),
    }
}

/// A response body into memory, failing (not truncating) past `cap` bytes: the declared
/// length is checked first, then bytes are counted as they come.
async fn read_capped(
    resp: Response,
    cap: usize,
    stall: Duration,
) -> std::result::Result<Vec<u8>, Failure> {
    let declared = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .or(resp.content_length());
    if let Some(n) = declared.filter(|&n| n > cap as u64) {
        return Err(Failure::Store(StoreError::TooLarge(format!(
            "the response declares {n} bytes, more than the {cap} allowed"
        ))));
    }
    let mut out = Vec::new();
    let mut s = resp.bytes_stream();
    loop {
        let next = tokio::time::timeout(stall, s.next())
            .await
            .map_err(|_| Failure::Stalled)?;
        match next {
            None => return Ok(out),
            Some(Err(e)) => return Err(classify(&e)),
            Some(Ok(c)) => {
                if out.len() + c.len() > cap {
                    return Err(Failure::Store(StoreError::TooLarge(format!(
                        "the response is longer than the {cap} bytes allowed"
                    ))));
                }
                out.extend_from_slice(&c);
            }
        }
    }
}

impl Session {
    /// A small body (manifest, tag list) read under `cap`; errors name `what`.
    pub async fn read_body(&self, resp: Response, cap: usize, what: &str) -> Result<Vec<u8>> {
        read_capped(resp, cap, self.stall)
            .await
            .map_err(|f| match f {
                Failure::Store(StoreError::TooLarge(m)) => {
                    StoreError::TooLarge(format!("{what}: {m}"))
                }
                f => f.into_error(self, what),
            })
    }

    /// The next chunk of a streamed body within the stall timeout; `Err` keeps whether
    /// a retry (a ranged request) may cure it.
    pub async fn next_chunk(
        &self,
        s: &mut (impl futures_util::Stream<Item = reqwest::Result<Bytes>> + Unpin),
        what: &str,
    ) -> std::result::Result<Option<Bytes>, (bool, StoreError)> {
        match tokio::time::timeout(self.stall, s.next()).await {
            Err(_) => Err((true, Failure::Stalled.into_error(self, what))),
            Ok(None) => Ok(None),
            Ok(Some(Ok(c))) => Ok(Some(c)),
            Ok(Some(Err(e))) => {
                let f = classify(&e);
                Err((
                    f.transient() || e.is_body() || e.is_decode(),
                    f.into_error(self, what),
                ))
            }
        }
    }

    pub fn retries(&self) -> u32 {
        self.retries
    }
}

/// Send Basic credentials to a registry and say whether they are accepted, as `docker
/// login` does: `GET /v2/`, answering its challenge (a token for no scope).
pub async fn check_login(s: &Session, what: &str) -> Result<()> {
    let r = Req::new(Method::GET, s.url("/v2/"), String::new(), what.to_string());
    let resp = s.send(&r, &no_body).await?;
    match resp.status() {
        st if st.is_success() => Ok(()),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(StoreError::Auth(format!(
            "{what}: the registry rejected the username or password"
        ))),
        _ => Err(s.status_error(resp, what).await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_reach() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry.example.com:5000"));
        let mut o = Options::default();
        assert!(reach("127.0.0.1:5000", &o).plain_http);
        assert!(!reach("ghcr.io", &o).plain_http);
        o.ca_files.push("ca.pem".into());
        assert!(!reach("127.0.0.1:5000", &o).plain_http);
        o.hosts.insert(
            "127.0.0.1:5000".into(),
            super::super::HostOptions {
                plain_http: true,
                ..Default::default()
            },
        );
        assert!(reach("127.0.0.1:5000", &o).plain_http);
        assert!(!reach("127.0.0.1:5001", &o).plain_http);
    }

    /// A body without Content-Length (chunked) is counted while read: a 200 MiB
    /// manifest stops the read just past the cap.
    #[tokio::test]
    async fn capped_reads_stop_at_the_cap() {
        let pulled = Arc::new(AtomicU64::new(0));
        let p = pulled.clone();
        let chunks = futures_util::stream::iter(0..200).map(move |_| {
            p.fetch_add(1 << 20, Ordering::Relaxed);
            Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 1 << 20]))
        });
        let resp = Response::from(http::Response::new(reqwest::Body::wrap_stream(chunks)));
        let r = read_capped(resp, 4 << 20, Duration::from_secs(5)).await;
        assert!(
            matches!(r, Err(Failure::Store(StoreError::TooLarge(_)))),
            "{r:?}"
        );
        assert!(pulled.load(Ordering::Relaxed) <= 6 << 20);
        let mut declared = http::Response::new(reqwest::Body::from(vec![0u8; 10]));
        declared
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from(200u64 << 20));
        let r = read_capped(Response::from(declared), 4 << 20, DEFAULT_STALL).await;
        assert!(
            matches!(r, Err(Failure::Store(StoreError::TooLarge(_)))),
            "{r:?}"
        );
    }

    #[test]
    fn envelope() {
        let (codes, msg) = error_detail(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown\u001b[31m"}]}"#,
        );
        assert_eq!(codes, vec!["MANIFEST_UNKNOWN"]);
        assert!(!msg.contains('\u{1b}'), "{msg}");
    }
}
