//! The OCI 1.1 referrers API in front of a real distribution registry.
//!
//! No registry with the referrers API installs from Debian, PyPI, npm or
//! crates.io (Debian's distribution is 2.8; zot and distribution 3 ship only as
//! release binaries and images). This proxy adds the API to the harness
//! registry the way such a registry behaves, and closes the fallback path so a
//! client can only succeed through the API:
//!
//! - `GET /v2/<name>/referrers/<digest>[?artifactType=…]` answers an OCI index
//!   built from the `sha256-<hex>` fallback index in the registry (empty index
//!   when there is none), with `OCI-Filters-Applied: artifactType` when filtered;
//! - a pushed manifest with a `subject` is added to that index by the proxy and
//!   the push is answered with `OCI-Subject: <subject digest>`; deleting it
//!   removes it from the index;
//! - the fallback tag is hidden: reads of `manifests/sha256-<hex>` answer 404,
//!   `tags/list` leaves it out, and writes to it are refused (405) and recorded.
//!
//! Every request is recorded ([`ReferrersProxy::requests`]).

use std::io::{self, BufReader};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use base64::Engine;
use regex::Regex;
use serde_json::{json, Value};

use super::fault::{relay, ProxiedRequest};
use super::http1::{self, RequestHead, ResponseHead, Server, Upstream};
use super::registry::Registry;
use super::sha256_digest;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MANIFEST_LIMIT: u64 = 8 << 20;

struct Shared {
    target: String,
    /// `Authorization` for the proxy's own requests to the registry.
    auth: Option<String>,
    log: Mutex<Vec<ProxiedRequest>>,
    /// Serialises read-modify-write of fallback indexes.
    index_lock: Mutex<()>,
}

pub struct ReferrersProxy {
    server: Server,
    shared: Arc<Shared>,
}

enum Route {
    Pass,
    Referrers { name: String, digest: String },
    HiddenRead,
    RefusedWrite,
    TagsList,
    PutManifest { name: String },
    DeleteManifest { name: String, reference: String },
}

fn route(req: &RequestHead) -> Route {
    let re = |p: &str| Regex::new(p).unwrap();
    let path = req.path();
    let m = req.method.as_str();
    let fallback = re(r"^sha256-[0-9a-f]{64}$");
    if let Some(c) = re(r"^/v2/(.+)/referrers/([^/]+)$").captures(path) {
        if m == "GET" || m == "HEAD" {
            return Route::Referrers {
                name: c[1].into(),
                digest: c[2].into(),
            };
        }
    }
    if let Some(c) = re(r"^/v2/(.+)/manifests/([^/]+)$").captures(path) {
        let (name, reference) = (c[1].to_string(), c[2].to_string());
        return match m {
            "GET" | "HEAD" if fallback.is_match(&reference) => Route::HiddenRead,
            "PUT" | "DELETE" if fallback.is_match(&reference) => Route::RefusedWrite,
            "PUT" => Route::PutManifest { name },
            "DELETE" => Route::DeleteManifest { name, reference },
            _ => Route::Pass,
        };
    }
    if m == "GET" && re(r"^/v2/.+/tags/list$").is_match(path) {
        return Route::TagsList;
    }
    Route::Pass
}

impl ReferrersProxy {
    /// In front of `reg` (plain HTTP; anonymous or htpasswd, whose credentials
    /// the proxy uses for its own index reads and writes).
    pub fn start(reg: &Registry) -> ReferrersProxy {
        assert!(!reg.is_tls(), "ReferrersProxy: plain-HTTP registries only");
        let auth = reg.credentials().map(|(u, p)| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            format!("Basic {b64}")
        });
        let shared = Arc::new(Shared {
            target: reg.host(),
            auth,
            log: Mutex::new(vec![]),
            index_lock: Mutex::new(()),
        });
        let sh = shared.clone();
        let server = Server::start(move |client, conn| {
            let _ = serve(client, conn, &sh);
        });
        ReferrersProxy { server, shared }
    }

    /// `127.0.0.1:PORT` to give to clients instead of the registry.
    pub fn addr(&self) -> &str {
        self.server.addr()
    }
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
    /// Requests the proxy intercepted as `action`: `"referrers-api"`,
    /// `"hidden-fallback-read"`, `"refused-fallback-write"`, `"subject-indexed"`,
    /// `"subject-unindexed"`, `"tags-filtered"`.
    pub fn count(&self, action: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.action == Some(action))
            .count()
    }
}

fn serve(client: TcpStream, conn: u64, sh: &Shared) -> io::Result<()> {
    let mut cr = BufReader::with_capacity(64 * 1024, client.try_clone()?);
    let mut cw = client;
    let mut up: Option<Upstream> = None;
    while let Some(mut req) = http1::read_request_head(&mut cr)? {
        http1::accept_expect(&mut req, &mut cw)?;
        let entry = {
            let mut log = sh.log.lock().unwrap();
            log.push(ProxiedRequest {
                conn,
                method: req.method.clone(),
                target: req.target.clone(),
                status: None,
                action: None,
                bytes: 0,
            });
            log.len() - 1
        };
        let (status, bytes, action, keep) = match route(&req) {
            Route::Pass => {
                let u = match up.as_mut() {
                    Some(u) => u,
                    None => up.insert(Upstream::connect(&sh.target)?),
                };
                let resp = http1::send_upstream(u, &req, &mut cr)?;
                let (status, bytes, keep) = relay(&req, resp, u, &mut cw, None)?;
                if !keep {
                    up = None;
                }
                (status, bytes, None, keep)
            }
            r => {
                let body = http1::read_body(&mut cr, req.framing(), MANIFEST_LIMIT)?;
                let (head, body, action) = sh.answer(r, &req, body)?;
                let status = head.status;
                http1::respond(&mut cw, &req.method, head, &body)?;
                (Some(status), body.len() as u64, action, true)
            }
        };
        {
            let mut log = sh.log.lock().unwrap();
            log[entry].status = status;
            log[entry].bytes = bytes;
            log[entry].action = action;
        }
        if !keep {
            break;
        }
    }
    Ok(())
}

type Answer = (ResponseHead, Vec<u8>, Option<&'static str>);

fn error(status: u16, code: &str, msg: &str) -> (ResponseHead, Vec<u8>) {
    let mut h = ResponseHead::new(status);
    h.set_header("Content-Type", "application/json; charset=utf-8");
    (h, http1::error_body(code, msg))
}

/// Copies an upstream response for the client (framing headers are recomputed).
fn pass_on(resp: ResponseHead) -> ResponseHead {
    let mut h = resp;
    h.headers.retain(|(n, _)| {
        !["content-length", "transfer-encoding", "connection"]
            .contains(&n.to_ascii_lowercase().as_str())
    });
    h
}

impl Shared {
    fn answer(&self, r: Route, req: &RequestHead, body: Vec<u8>) -> io::Result<Answer> {
        Ok(match r {
            Route::Pass => unreachable!(),
            Route::Referrers { name, digest } => self.referrers(req, &name, &digest)?,
            Route::HiddenRead => {
                let (h, b) = error(404, "MANIFEST_UNKNOWN", "manifest unknown");
                (h, b, Some("hidden-fallback-read"))
            }
            Route::RefusedWrite => {
                let msg = "the sha256-<hex> fallback tag is reserved: this registry has the referrers API";
                let (h, b) = error(405, "UNSUPPORTED", msg);
                (h, b, Some("refused-fallback-write"))
            }
            Route::TagsList => {
                let (resp, body) = self.forward(req, &[])?;
                let body = hide_fallback_tags(&body).unwrap_or(body);
                (pass_on(resp), body, Some("tags-filtered"))
            }
            Route::PutManifest { name } => self.put_manifest(req, &name, body)?,
            Route::DeleteManifest { name, reference } => {
                self.delete_manifest(req, &name, &reference)?
            }
        })
    }

    /// The client's request, sent as is on a fresh connection.
    fn forward(&self, req: &RequestHead, body: &[u8]) -> io::Result<(ResponseHead, Vec<u8>)> {
        let mut head = req.clone();
        head.remove_header("connection");
        http1::roundtrip(&self.target, head, body)
    }

    /// The proxy's own request to the registry.
    fn own(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<(ResponseHead, Vec<u8>)> {
        let mut head = RequestHead::new(method, target);
        for (n, v) in headers {
            head.set_header(n, v);
        }
        if let Some(a) = &self.auth {
            head.set_header("Authorization", a);
        }
        http1::roundtrip(&self.target, head, body)
    }

    fn fallback_index(&self, name: &str, subject: &str) -> io::Result<Vec<Value>> {
        let tag = subject.replacen(':', "-", 1);
        let (resp, body) = self.own(
            "GET",
            &format!("/v2/{name}/manifests/{tag}"),
            &[("Accept", OCI_INDEX)],
            b"",
        )?;
        if resp.status != 200 {
            return Ok(vec![]);
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(v["manifests"].as_array().cloned().unwrap_or_default())
    }

    fn put_index(&self, name: &str, subject: &str, manifests: Vec<Value>) -> io::Result<()> {
        let tag = subject.replacen(':', "-", 1);
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        let (resp, body) = self.own(
            "PUT",
            &format!("/v2/{name}/manifests/{tag}"),
            &[("Content-Type", OCI_INDEX)],
            index.to_string().as_bytes(),
        )?;
        if resp.status != 201 {
            return Err(io::Error::other(format!(
                "referrers proxy: writing {name}:{tag} got {}: {}",
                resp.status,
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(())
    }

    fn referrers(&self, req: &RequestHead, name: &str, digest: &str) -> io::Result<Answer> {
        if !Regex::new(r"^sha256:[0-9a-f]{64}$")
            .unwrap()
            .is_match(digest)
        {
            let (h, b) = error(400, "DIGEST_INVALID", "invalid digest");
            return Ok((h, b, Some("referrers-api")));
        }
        let filter = req
            .query()
            .into_iter()
            .find(|(k, _)| k == "artifactType")
            .map(|(_, v)| v);
        let mut manifests = self.fallback_index(name, digest)?;
        let mut head = ResponseHead::new(200);
        head.set_header("Content-Type", OCI_INDEX);
        if let Some(t) = &filter {
            manifests.retain(|d| d["artifactType"].as_str() == Some(t));
            head.set_header("OCI-Filters-Applied", "artifactType");
        }
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        Ok((head, index.to_string().into_bytes(), Some("referrers-api")))
    }

    fn put_manifest(&self, req: &RequestHead, name: &str, body: Vec<u8>) -> io::Result<Answer> {
        let (resp, rbody) = self.forward(req, &body)?;
        let mut head = pass_on(resp);
        let m: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let Some(subject) = m["subject"]["digest"]
            .as_str()
            .filter(|_| head.status == 201)
        else {
            return Ok((head, rbody, None));
        };
        let _guard = self.index_lock.lock().unwrap();
        let digest = sha256_digest(&body);
        let mut manifests = self.fallback_index(name, subject)?;
        manifests.retain(|d| d["digest"].as_str() != Some(&digest));
        manifests.push(descriptor(req, &m, &digest, body.len()));
        self.put_index(name, subject, manifests)?;
        head.set_header("OCI-Subject", subject);
        Ok((head, rbody, Some("subject-indexed")))
    }

    fn delete_manifest(
        &self,
        req: &RequestHead,
        name: &str,
        reference: &str,
    ) -> io::Result<Answer> {
        let accept =
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";
        let (_, old) = self.own(
            "GET",
            &format!("/v2/{name}/manifests/{reference}"),
            &[("Accept", accept)],
            b"",
        )?;
        let (resp, rbody) = self.forward(req, &[])?;
        let head = pass_on(resp);
        let m: Value = serde_json::from_slice(&old).unwrap_or(Value::Null);
        let Some(subject) = m["subject"]["digest"]
            .as_str()
            .filter(|_| head.status == 202)
        else {
            return Ok((head, rbody, None));
        };
        let _guard = self.index_lock.lock().unwrap();
        let mut manifests = self.fallback_index(name, subject)?;
        manifests.retain(|d| d["digest"].as_str() != Some(reference));
        self.put_index(name, subject, manifests)?;
        Ok((head, rbody, Some("subject-unindexed")))
    }
}

/// The descriptor of a referrer as the referrers API lists it: `artifactType`
/// is the manifest's, else its config media type (OCI distribution spec 1.1).
fn descriptor(req: &RequestHead, m: &Value, digest: &str, size: usize) -> Value {
    let media_type = m["mediaType"]
        .as_str()
        .or(req.header("content-type"))
        .unwrap_or("application/vnd.oci.image.manifest.v1+json");
    let mut d = json!({"mediaType": media_type, "digest": digest, "size": size});
    if let Some(t) = m["artifactType"]
        .as_str()
        .or(m["config"]["mediaType"].as_str())
    {
        d["artifactType"] = json!(t);
    }
    if m["annotations"].is_object() {
        d["annotations"] = m["annotations"].clone();
    }
    d
}

fn hide_fallback_tags(body: &[u8]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let fallback = Regex::new(r"^sha256-[0-9a-f]{64}$").unwrap();
    let tags = v["tags"].as_array_mut()?;
    tags.retain(|t| !t.as_str().is_some_and(|t| fallback.is_match(t)));
    Some(v.to_string().into_bytes())
}
