//! A real CNCF distribution registry (`docker-registry` Debian package) on a
//! free loopback port, with its own temporary storage, log and certificates.

use std::fs::{self, OpenOptions};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::http::curl;
use super::require_bin;
use super::token::{Scope, TokenServer, TOKEN_ISSUER, TOKEN_SERVICE};

const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests to this path are made by the harness itself (log sync) and are
/// never reported by [`Registry::requests`].
const SYNC_PATH: &str = "/v2/_harness/sync";

/// How the registry is protected.
#[derive(Clone, Debug)]
pub enum Variant {
    Anonymous,
    Htpasswd {
        user: String,
        password: String,
    },
    Tls,
    TlsHtpasswd {
        user: String,
        password: String,
    },
    /// `auth: token`: a harness [`TokenServer`] with this one user is the realm
    /// ([`Registry::token_server`]).
    Token {
        user: String,
        password: String,
    },
    /// A pull-through cache (`proxy.remoteurl`) of another registry, open to its
    /// own clients; see [`Registry::pull_through`].
    PullThrough(CacheOf),
}

/// What a pull-through cache fronts.
#[derive(Clone, Debug)]
pub struct CacheOf {
    /// `http://127.0.0.1:PORT` or `https://…`
    pub remote_url: String,
    /// Credentials the cache presents upstream (distribution 2.8 uses them only
    /// with token-auth upstreams: it looks them up by the Bearer realm).
    pub credentials: Option<(String, String)>,
    /// CA of a TLS upstream (given to the cache as `SSL_CERT_FILE`).
    pub ca_file: Option<PathBuf>,
}

impl Variant {
    pub fn htpasswd(user: &str, password: &str) -> Variant {
        Variant::Htpasswd {
            user: user.into(),
            password: password.into(),
        }
    }
    pub fn tls_htpasswd(user: &str, password: &str) -> Variant {
        Variant::TlsHtpasswd {
            user: user.into(),
            password: password.into(),
        }
    }
    pub fn token(user: &str, password: &str) -> Variant {
        Variant::Token {
            user: user.into(),
            password: password.into(),
        }
    }
}

/// One access-log line with everything the Combined Log Format holds that
/// tests count: size of the response body and the client's user agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessEntry {
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Response body bytes.
    pub bytes: u64,
    pub user_agent: String,
}

/// One request as recorded by the registry's access log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    /// Request URI as sent (path + query string).
    pub path: String,
    pub status: u16,
}

pub struct Registry {
    dir: TempDir,
    port: u16,
    tls: bool,
    ca: Option<PathBuf>,
    creds: Option<(String, String)>,
    token: Option<TokenServer>,
    cache_of: Option<CacheOf>,
    child: Option<Child>,
    sync_seq: u32,
}

impl Registry {
    /// Starts a registry and waits until `GET /v2/` answers (200 or 401).
    pub fn start(variant: Variant) -> Registry {
        let bin = require_bin("docker-registry", "docker-registry");
        let dir = tempfile::Builder::new()
            .prefix("kplug-registry-")
            .tempdir()
            .unwrap();
        let (mut token, mut cache_of) = (None, None);
        let (tls, creds) = match variant {
            Variant::Anonymous => (false, None),
            Variant::Tls => (true, None),
            Variant::Htpasswd { user, password } => (false, Some((user, password))),
            Variant::TlsHtpasswd { user, password } => (true, Some((user, password))),
            Variant::Token { user, password } => {
                let ts = TokenServer::start(&user, &password);
                fs::write(dir.path().join("token-ca.pem"), ts.root_cert_pem()).unwrap();
                token = Some(ts);
                (false, None)
            }
            Variant::PullThrough(c) => {
                cache_of = Some(c);
                (false, None)
            }
        };
        if let Some((user, password)) = &creds {
            write_htpasswd(&dir.path().join("htpasswd"), user, password);
        }
        let ca = tls.then(|| write_certs(dir.path()));
        fs::create_dir(dir.path().join("storage")).unwrap();
        let mut reg = Registry {
            dir,
            port: 0,
            tls,
            ca,
            creds,
            token,
            cache_of,
            child: None,
            sync_seq: 0,
        };
        for attempt in 1.. {
            reg.port = free_port();
            reg.write_config();
            match reg.spawn(&bin) {
                Ok(()) => return reg,
                // Someone grabbed the port between our probe and the registry's bind.
                Err(log) if log.contains("address already in use") && attempt < 5 => continue,
                Err(log) => panic!("docker-registry did not start:\n{log}"),
            }
        }
        unreachable!()
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn is_tls(&self) -> bool {
        self.tls
    }
    /// `http://127.0.0.1:PORT` or `https://…`, followed by `path`.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.host())
    }
    /// The CA that signed the server certificate (TLS variants only).
    pub fn ca_file(&self) -> &Path {
        self.ca
            .as_deref()
            .expect("ca_file(): this registry does not use TLS")
    }
    /// `(user, password)` for htpasswd and token variants.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        match &self.token {
            Some(ts) => Some(ts.credentials()),
            None => self.creds.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        }
    }

    /// The token server of a [`Variant::Token`] registry.
    pub fn token_server(&self) -> &TokenServer {
        self.token
            .as_ref()
            .expect("token_server(): this registry does not use token auth")
    }

    /// A pull-through cache of this registry (anonymous to its clients),
    /// presenting this registry's credentials upstream. This registry must be
    /// running: distribution probes the remote's `/v2/` when it starts.
    pub fn pull_through(&self) -> Registry {
        Registry::start(Variant::PullThrough(CacheOf {
            remote_url: self.url(""),
            credentials: self
                .credentials()
                .map(|(u, p)| (u.to_string(), p.to_string())),
            ca_file: self.ca.clone(),
        }))
    }

    /// Whether the blob's data is in this registry's storage (for a pull-through
    /// cache: committed, so the next read is served locally).
    pub fn has_blob(&self, digest: &str) -> bool {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.storage_dir()
            .join(format!(
                "docker/registry/v2/blobs/sha256/{}/{hex}/data",
                &hex[..2]
            ))
            .is_file()
    }

    /// Waits up to `timeout` for [`has_blob`](Self::has_blob).
    pub fn wait_for_blob(&self, digest: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.has_blob(digest) {
            if Instant::now() > deadline {
                return false;
            }
            sleep(Duration::from_millis(5));
        }
        true
    }

    /// `url` of the registry a pull-through cache fronts.
    pub fn cache_of(&self) -> Option<&CacheOf> {
        self.cache_of.as_ref()
    }
    /// The temporary directory holding config, log, certificates and storage.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// Root of the filesystem storage driver (kept across `restart`).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }
    /// Everything the registry wrote to stdout/stderr so far (all runs).
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// All requests served so far, in log order, harness sync requests excluded.
    /// While running, first makes sure that every response a client already
    /// received is in the log (the access log line is written just after the
    /// response, so a bare read could miss the last request).
    pub fn requests(&mut self) -> Vec<LoggedRequest> {
        if self.child.is_some() {
            self.sync_log();
        }
        self.log()
            .lines()
            .filter_map(parse_access_line)
            .filter(|r| !r.path.starts_with(SYNC_PATH))
            .collect()
    }

    /// Like [`requests`](Self::requests), with response sizes and user agents.
    pub fn access_log(&mut self) -> Vec<AccessEntry> {
        if self.child.is_some() {
            self.sync_log();
        }
        self.log()
            .lines()
            .filter_map(parse_access_entry)
            .filter(|r| !r.path.starts_with(SYNC_PATH))
            .collect()
    }

    /// Response body bytes served for requests with this method (`""` = any)
    /// whose URI contains `path_substring`.
    pub fn bytes_served(&mut self, method: &str, path_substring: &str) -> u64 {
        self.access_log()
            .iter()
            .filter(|r| method.is_empty() || r.method.eq_ignore_ascii_case(method))
            .filter(|r| r.path.contains(path_substring))
            .map(|r| r.bytes)
            .sum()
    }

    /// Number of served requests with this method (`""` = any) whose URI
    /// contains `path_substring`.
    pub fn request_count(&mut self, method: &str, path_substring: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| method.is_empty() || r.method.eq_ignore_ascii_case(method))
            .filter(|r| r.path.contains(path_substring))
            .count()
    }

    /// Kills the registry (SIGKILL, like a crash). Storage and log are kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.stop();
        let bin = require_bin("docker-registry", "docker-registry");
        if let Err(log) = self.spawn(&bin) {
            panic!(
                "docker-registry did not restart on port {}:\n{log}",
                self.port
            );
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let mut cfg = format!(
            "version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {d}/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  # fixed so that upload URLs stay valid across restart()
  secret: kplug-test-secret
",
            port = self.port
        );
        if self.tls {
            cfg += &format!("  tls:\n    certificate: {d}/server.pem\n    key: {d}/server.key\n");
        }
        if self.creds.is_some() {
            cfg += &format!("auth:\n  htpasswd:\n    realm: kplug-test\n    path: {d}/htpasswd\n");
        }
        if let Some(ts) = &self.token {
            cfg += &format!(
                "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {d}/token-ca.pem\n",
                ts.realm()
            );
        }
        if let Some(c) = &self.cache_of {
            cfg += &format!("proxy:\n  remoteurl: {}\n", c.remote_url);
            if let Some((u, p)) = &c.credentials {
                cfg += &format!("  username: {u}\n  password: {p}\n");
            }
        }
        fs::write(self.dir.path().join("config.yml"), cfg).unwrap();
    }

    /// Spawns the registry and waits for `/v2/`. On failure returns the log of this run.
    fn spawn(&mut self, bin: &Path) -> Result<(), String> {
        let log_path = self.log_file();
        let log_start = fs::metadata(&log_path)
            .map(|m| m.len() as usize)
            .unwrap_or(0);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .env_remove("REGISTRY_HTTP_ADDR")
            .envs(
                self.cache_of
                    .as_ref()
                    .and_then(|c| c.ca_file.as_ref())
                    .map(|ca| ("SSL_CERT_FILE", ca.clone())),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        self.child = Some(child);
        let run_log = |reg: &Registry| reg.log().get(log_start..).unwrap_or("").to_string();

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("exited with {status}\n{}", run_log(self)));
            }
            // "listening on" proves that *our* process bound the port (another
            // process holding it could answer /v2/ too).
            if run_log(self).contains("listening on ") {
                if let Ok((200 | 401, _, _)) = curl(&self.url("/v2/"), &self.curl_tls_args()) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "no answer on GET /v2/ within {START_TIMEOUT:?}\n{}",
                    run_log(self)
                ));
            }
            sleep(Duration::from_millis(5));
        }
    }

    /// `--cacert CA` for TLS variants (no credentials).
    pub fn curl_tls_args(&self) -> Vec<String> {
        match &self.ca {
            Some(ca) => vec!["--cacert".into(), ca.display().to_string()],
            None => vec![],
        }
    }

    /// `--cacert CA` and `-u USER:PASSWORD` as this registry needs (token
    /// registries: see [`curl_args_for`](Self::curl_args_for)).
    pub fn curl_args(&self) -> Vec<String> {
        let mut args = self.curl_tls_args();
        if let Some((user, password)) = &self.creds {
            args.extend(["-u".to_string(), format!("{user}:{password}")]);
        }
        args
    }

    /// [`curl_args`](Self::curl_args) for a request to `url_or_path`; on a token
    /// registry, a Bearer token minted for the repository the path names
    /// (pull, push, delete) or for the catalog (not recorded by the token server).
    pub fn curl_args_for(&self, url_or_path: &str) -> Vec<String> {
        let Some(ts) = &self.token else {
            return self.curl_args();
        };
        let path = match url_or_path.split_once("://") {
            Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/"),
            None => url_or_path,
        };
        let path = path.split('?').next().unwrap_or("");
        let repo = regex::Regex::new(r"^/v2/(.+?)/(manifests|blobs|tags|referrers)/")
            .unwrap()
            .captures(path)
            .map(|c| c[1].to_string());
        let access = match repo {
            Some(r) => vec![Scope::repository(&r, &["pull", "push", "delete"])],
            None if path.starts_with("/v2/_catalog") => vec![Scope {
                kind: "registry".into(),
                name: "catalog".into(),
                actions: vec!["*".into()],
            }],
            None => vec![],
        };
        let token = ts.mint("harness", &access);
        let mut args = self.curl_tls_args();
        args.extend(["-H".to_string(), format!("Authorization: Bearer {token}")]);
        args
    }

    /// Makes a marker request and waits until its access-log line appears.
    /// A request's log line is written microseconds after its response while
    /// starting curl takes milliseconds, so every request whose response a
    /// client has already seen is in the log once the marker is.
    fn sync_log(&mut self) {
        self.sync_seq += 1;
        let marker = format!("{SYNC_PATH}/{}", self.sync_seq);
        let _ = curl(&self.url(&marker), &self.curl_tls_args());
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log().contains(&format!(" {marker} ")) {
            assert!(
                Instant::now() < deadline,
                "registry never logged {marker}:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Parses a Combined Log Format line:
/// `127.0.0.1 - - [21/Nov/2026:06:23:29 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"`
pub fn parse_access_line(line: &str) -> Option<LoggedRequest> {
    let rest = &line[line.find("] \"")? + 3..];
    let (request, rest) = rest.split_once('"')?;
    let mut req = request.split(' ');
    let (method, path, proto) = (req.next()?, req.next()?, req.next()?);
    if !proto.starts_with("HTTP/") || req.next().is_some() {
        return None;
    }
    let status = rest.split_whitespace().next()?.parse().ok()?;
    Some(LoggedRequest {
        method: method.into(),
        path: path.into(),
        status,
    })
}

/// [`parse_access_line`] plus the response size and user agent.
pub fn parse_access_entry(line: &str) -> Option<AccessEntry> {
    let r = parse_access_line(line)?;
    let rest = &line[line.find("] \"")? + 3..];
    let (_, rest) = rest.split_once('"')?;
    let mut fields = rest.split_whitespace();
    let _status = fields.next()?;
    let bytes = fields.next()?.parse().unwrap_or(0);
    let user_agent = rest
        .trim_end()
        .strip_suffix('"')
        .and_then(|s| s.rsplit_once('"'))
        .map(|(_, ua)| ua.to_string())
        .unwrap_or_default();
    Some(AccessEntry {
        method: r.method,
        path: r.path,
        status: r.status,
        bytes,
        user_agent,
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_htpasswd(path: &Path, user: &str, password: &str) {
    // The registry only accepts bcrypt entries.
    let bin = require_bin("htpasswd", "apache2-utils");
    let out = Command::new(bin)
        .args(["-B", "-b", "-n", user, password])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "htpasswd failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(path, &out.stdout).unwrap();
}

/// Writes `ca.pem` and a `server.pem`/`server.key` for 127.0.0.1 and localhost
/// signed by it; returns the path of `ca.pem`.
fn write_certs(dir: &Path) -> PathBuf {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "kplug test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let mut server =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    server.use_authority_key_identifier_extension = true;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().unwrap();
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();

    fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
    fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    dir.join("ca.pem")
}
