//! A repository in an OCI distribution registry, spoken to directly over the run's
//! shared HTTP session ([`super::http`]): the distribution API calls, streaming in both
//! directions through the one hashing loop, bounded reads of everything untrusted.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use reqwest::{Method, Response, StatusCode};

use super::http::{no_body, Body, Req, Session};
use super::{BlobSource, Chunks, DigestLater, Options, ReadStore, Result, WriteStore, Writer};
use crate::error::StoreError;
use crate::oci::auth::Credential;
use crate::oci::reference::RegistryRef;
use crate::oci::{self, Descriptor, Index};

/// Manifests are untrusted input: never more than this is read.
pub const MANIFEST_CAP: usize = 4 << 20;
/// One page of a tag list.
const TAGS_PAGE_CAP: usize = 16 << 20;

pub struct RemoteStore {
    s: Arc<Session>,
    r: RegistryRef,
    /// Upload sessions opened by a refused mount (digest → upload URL), used by the next
    /// push of that blob instead of a new POST.
    pending: Mutex<HashMap<String, String>>,
    /// Serialises this store's read-modify-write of fallback referrers indexes.
    fallback_lock: tokio::sync::Mutex<()>,
}

impl RemoteStore {
    pub async fn new(r: &RegistryRef, opts: &Options) -> Result<Self> {
        Ok(RemoteStore {
            s: Session::get(&r.registry, r.host(), opts)?,
            r: r.clone(),
            pending: Mutex::new(HashMap::new()),
            fallback_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn url(&self, tail: &str) -> String {
        self.s.url(&format!("/v2/{}/{tail}", self.r.repository))
    }

    fn pull(&self) -> String {
        format!("repository:{}:pull", self.r.repository)
    }

    fn push(&self) -> String {
        format!("repository:{}:pull,push", self.r.repository)
    }

    fn req(&self, method: Method, tail: &str, push: bool, what: String) -> Req {
        let scope = if push { self.push() } else { self.pull() };
        Req::new(method, self.url(tail), scope, what)
    }

    fn at(&self, x: &str) -> String {
        if x.starts_with("sha256:") {
            format!("{}@{x}", self.r.repo_name())
        } else {
            format!("{}:{x}", self.r.repo_name())
        }
    }

    async fn expect(&self, resp: Response, ok: &[StatusCode], what: &str) -> Result<Response> {
        if ok.contains(&resp.status()) {
            Ok(resp)
        } else {
            Err(self.s.status_error(resp, what).await)
        }
    }

    /// `HEAD` something: `Ok(false)` on 404.
    async fn exists(&self, tail: &str, accept: Option<String>, what: String) -> Result<bool> {
        let mut req = self.req(Method::HEAD, tail, false, what);
        req.accept = accept;
        let resp = self.s.send(&req, &no_body).await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.s.status_error(resp, &req.what).await),
        }
    }

    /// The blob's body from `offset` (a ranged request to resume an interrupted one).
    async fn open_blob(
        &self,
        desc: &Descriptor,
        offset: u64,
        what: &str,
    ) -> Result<BoxStream<'static, reqwest::Result<Bytes>>> {
        let mut req = self.req(
            Method::GET,
            &format!("blobs/{}", desc.digest),
            false,
            what.into(),
        );
        if offset > 0 {
            req.range_from = Some(offset);
        }
        let resp = self.s.send(&req, &no_body).await?;
        let want = if offset > 0 {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        };
        if offset > 0 && resp.status() == StatusCode::OK {
            return Err(StoreError::Transport(format!(
                "{what}: the connection broke after {offset} bytes and the registry cannot resume (no range support)"
            )));
        }
        let resp = self.expect(resp, &[want], what).await?;
        if let Some(n) = resp.content_length() {
            if offset + n > desc.size {
                return Err(StoreError::Integrity(format!(
                    "{what}: the registry sends {} bytes, the descriptor says {}",
                    offset + n,
                    desc.size
                )));
            }
        }
        Ok(resp.bytes_stream().boxed())
    }

    /// A blob's chunks; a connection that breaks mid-body is resumed with a ranged GET
    /// (the hash goes on where it was), as long as retries remain.
    fn blob_chunks<'a>(&'a self, desc: &'a Descriptor, what: &'a str) -> Chunks<'a> {
        struct St {
            body: Option<BoxStream<'static, reqwest::Result<Bytes>>>,
            offset: u64,
            resumes: u32,
            done: bool,
        }
        let st = St {
            body: None,
            offset: 0,
            resumes: 0,
            done: false,
        };
        futures_util::stream::unfold(st, move |mut st| async move {
            if st.done {
                return None;
            }
            loop {
                if st.body.is_none() {
                    match self.open_blob(desc, st.offset, what).await {
                        Ok(b) => st.body = Some(b),
                        Err(e) => {
                            st.done = true;
                            return Some((Err(e), st));
                        }
                    }
                }
                let body = st.body.as_mut().expect("opened");
                match self.s.next_chunk(body, what).await {
                    Ok(Some(c)) => {
                        st.offset += c.len() as u64;
                        return Some((Ok(c), st));
                    }
                    Ok(None) => return None,
                    Err((retry, e)) => {
                        if retry && st.resumes < self.s.retries() && st.offset < desc.size {
                            st.resumes += 1;
                            st.body = None;
                            tracing::info!("{e}; resuming at byte {}", st.offset);
                            continue;
                        }
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
        })
        .boxed()
    }
}

#[async_trait]
impl ReadStore for RemoteStore {
    fn describe(&self) -> String {
        self.r.repo_name()
    }

    async fn resolve(&self, tag: &str) -> Result<Descriptor> {
        Ok(self.fetch_manifest(tag).await?.1)
    }

    async fn fetch_manifest(&self, reference: &str) -> Result<(Vec<u8>, Descriptor)> {
        let what = format!("fetching manifest {}", self.at(reference));
        let mut req = self.req(Method::GET, &format!("manifests/{reference}"), false, what);
        req.accept = Some(oci::MANIFEST_ACCEPT.join(", "));
        let resp = self.s.send(&req, &no_body).await?;
        let resp = self.expect(resp, &[StatusCode::OK], &req.what).await?;
        let bytes = self.s.read_body(resp, MANIFEST_CAP, &req.what).await?;
        let desc = super::manifest_descriptor(&bytes, None);
        if reference.starts_with("sha256:") && desc.digest != reference {
            return Err(StoreError::Integrity(format!(
                "registry served content for {} that hashes to {}",
                self.at(reference),
                desc.digest
            )));
        }
        Ok((bytes, desc))
    }

    async fn manifest_exists(&self, digest: &str) -> Result<bool> {
        let what = format!("checking {}", self.at(digest));
        let accept = Some(oci::MANIFEST_ACCEPT.join(", "));
        self.exists(&format!("manifests/{digest}"), accept, what)
            .await
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool> {
        let what = format!("checking blob {digest} in {}", self.describe());
        self.exists(&format!("blobs/{digest}"), None, what).await
    }

    async fn fetch_blob(&self, desc: &Descriptor, sink: Writer<'_>) -> Result<()> {
        let what = format!("fetching blob {} from {}", desc.digest, self.describe());
        super::copy_hashed(self.blob_chunks(desc, &what), sink, desc, &what).await
    }

    async fn list_tags(&self) -> Result<Vec<String>> {
        const PAGE: usize = 1000;
        let what = format!("listing tags of {}", self.describe());
        let mut all: Vec<String> = Vec::new();
        let mut last: Option<String> = None;
        // Registries may cap `n` below what was asked, so only an empty page (or one that
        // does not move past `last`, from a registry ignoring it) ends the list: callers
        // rely on a complete list to know which signature tags exist.
        loop {
            let mut tail = format!("tags/list?n={PAGE}");
            if let Some(l) = &last {
                tail.push_str(&format!("&last={}", urlencode(l)));
            }
            let req = self.req(Method::GET, &tail, false, what.clone());
            let resp = self.s.send(&req, &no_body).await?;
            let resp = self.expect(resp, &[StatusCode::OK], &what).await?;
            let more = resp.headers().contains_key(reqwest::header::LINK);
            let body = self.s.read_body(resp, TAGS_PAGE_CAP, &what).await?;
            #[derive(serde::Deserialize)]
            struct Page {
                tags: Option<Vec<String>>,
            }
            let page: Page = serde_json::from_slice(&body)
                .map_err(|e| StoreError::Transport(format!("{what}: not a tag list ({e})")))?;
            let tags = page.tags.unwrap_or_default();
            let repeats = last.as_ref().is_some_and(|l| tags.contains(l));
            if tags.is_empty() || repeats {
                break;
            }
            let short = tags.len() < PAGE;
            last = tags.last().cloned();
            all.extend(tags);
            // A short page without a `Link` to the next one is the last (distribution
            // sends `Link` exactly when more follow).
            if short && !more {
                break;
            }
        }
        Ok(all)
    }

    fn registry_repo(&self) -> Option<(String, String)> {
        Some((self.r.host().to_string(), self.r.repository.clone()))
    }

    async fn referrers(&self, digest: &str, artifact_type: Option<&str>) -> Result<Index> {
        if self.s.referrers_api.load(Ordering::Relaxed) != API_ABSENT {
            if let Some(idx) = self.referrers_api(digest, artifact_type).await? {
                return Ok(idx);
            }
        }
        let mut idx = super::fallback_referrers(self, digest)
            .await?
            .unwrap_or_else(Index::empty);
        super::filter_artifact_type(&mut idx, artifact_type);
        Ok(idx)
    }

    fn referrers_beyond_tags(&self) -> bool {
        self.s.referrers_api.load(Ordering::Relaxed) != API_ABSENT
    }
}

const API_PRESENT: u8 = 1;
const API_ABSENT: u8 = 2;

impl RemoteStore {
    /// `GET /v2/<name>/referrers/<digest>[?artifactType=…]`, following `Link` pages;
    /// `None` when the registry has no referrers API (404, as the spec says).
    async fn referrers_api(
        &self,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Option<Index>> {
        let what = format!("listing referrers of {}", self.at(digest));
        let mut tail = format!("referrers/{digest}");
        if let Some(at) = artifact_type {
            tail.push_str(&format!("?artifactType={}", urlencode(at)));
        }
        let mut url = self.url(&tail);
        let mut all = Index::empty();
        for _ in 0..100 {
            let mut req = Req::new(Method::GET, url.clone(), self.pull(), what.clone());
            req.accept = Some(oci::INDEX_V1.to_string());
            let resp = self.s.send(&req, &no_body).await?;
            if all.manifests.is_empty() && matches!(resp.status().as_u16(), 404 | 405) {
                self.s.referrers_api.store(API_ABSENT, Ordering::Relaxed);
                return Ok(None);
            }
            let resp = self.expect(resp, &[StatusCode::OK], &what).await?;
            self.s.referrers_api.store(API_PRESENT, Ordering::Relaxed);
            let filtered = resp
                .headers()
                .get("OCI-Filters-Applied")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.split(',').any(|f| f.trim() == "artifactType"));
            let next = next_link(&resp).map(|l| match l.starts_with("http") {
                true => l,
                false => self.s.url(&l),
            });
            let body = self.s.read_body(resp, MANIFEST_CAP, &what).await?;
            let mut page: Index = serde_json::from_slice(&body)
                .map_err(|e| StoreError::Integrity(format!("{what}: not an OCI index ({e})")))?;
            if !filtered {
                super::filter_artifact_type(&mut page, artifact_type);
            }
            all.manifests.extend(page.manifests);
            match next {
                Some(n) => url = n,
                None => break,
            }
        }
        Ok(Some(all))
    }
}

/// The target of a `Link: <…>; rel="next"` header.
fn next_link(resp: &Response) -> Option<String> {
    let v = resp.headers().get(reqwest::header::LINK)?.to_str().ok()?;
    v.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        params.contains("rel=\"next\"").then(|| {
            target
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

/// Percent-encode a query value.
fn urlencode(s: &str) -> String {
    reqwest::Url::parse_with_params("http://x/", &[("v", s)])
        .map(|u| {
            u.query()
                .unwrap_or("v=")
                .trim_start_matches("v=")
                .to_string()
        })
        .unwrap_or_else(|_| s.to_string())
}

/// An upload `Location`, made absolute.
fn session_url(s: &Session, loc: &str) -> String {
    if loc.starts_with("http://") || loc.starts_with("https://") {
        loc.to_string()
    } else {
        s.url(loc)
    }
}

/// An upload URL from a `Location` header, absolute, with `digest=` added.
fn upload_url(s: &Session, loc: &str, digest: &str) -> String {
    let abs = session_url(s, loc);
    let sep = if abs.contains('?') { '&' } else { '?' };
    format!("{abs}{sep}digest={}", urlencode(digest))
}

impl RemoteStore {
    /// `POST /blobs/uploads/` → the upload URL (`Location`).
    async fn start_upload(&self, what: &str) -> Result<String> {
        let req = self.req(Method::POST, "blobs/uploads/", true, what.to_string());
        let resp = self.s.send(&req, &no_body).await?;
        let resp = self.expect(resp, &[StatusCode::ACCEPTED], what).await?;
        location(&resp, what)
    }

    /// One monolithic `PUT` of the whole blob to an upload URL.
    async fn put_blob(
        &self,
        url: &str,
        desc: &Descriptor,
        src: &BlobSource,
        what: &str,
    ) -> Result<()> {
        let mut req = Req::new(
            Method::PUT,
            upload_url(&self.s, url, &desc.digest),
            self.push(),
            what.to_string(),
        );
        req.content_type = Some("application/octet-stream".into());
        // The session URL is consumed by the first try: a failed PUT restarts the upload.
        req.idempotent = false;
        let resp = self.s.send(&req, &|| upload_body(src, desc.size)).await?;
        self.expect(resp, &[StatusCode::CREATED], what).await?;
        Ok(())
    }

    /// The whole blob as one streamed `PATCH` (what `docker push` sends); returns the
    /// URL to go on with.
    async fn patch_blob(
        &self,
        url: &str,
        size: u64,
        src: &BlobSource,
        what: &str,
    ) -> Result<String> {
        let mut req = Req::new(
            Method::PATCH,
            session_url(&self.s, url),
            self.push(),
            what.to_string(),
        );
        req.content_type = Some("application/octet-stream".into());
        let resp = self.s.send(&req, &|| upload_body(src, size)).await?;
        let resp = self.expect(resp, &[StatusCode::ACCEPTED], what).await?;
        location(&resp, what)
    }

    /// Commit a `PATCH`ed upload: `PUT ?digest=` without a body. The registry checks the
    /// digest against the bytes it received.
    async fn commit_upload(&self, url: &str, digest: &str, what: &str) -> Result<()> {
        let mut req = Req::new(
            Method::PUT,
            upload_url(&self.s, url, digest),
            self.push(),
            what.to_string(),
        );
        req.idempotent = false;
        let resp = self.s.send(&req, &no_body).await?;
        self.expect(resp, &[StatusCode::CREATED], what).await?;
        Ok(())
    }

    /// After a failed upload attempt: true (having waited a back-off) when it is to be
    /// started again from a new POST, for a transient error and a source that can be read
    /// again, within the retry budget.
    async fn upload_again(&self, err: &StoreError, src: &BlobSource, attempt: &mut u32) -> bool {
        let StoreError::Transport(m) = err else {
            return false;
        };
        if !src.restartable() || *attempt >= self.s.retries() {
            return false;
        }
        *attempt += 1;
        tracing::info!(
            "{m}; starting the upload again ({attempt}/{})",
            self.s.retries()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200 << (*attempt).min(4))).await;
        true
    }

    /// Drop an upload session (best effort: registries purge stale ones anyway).
    async fn cancel_upload(&self, url: &str, what: &str) {
        let req = Req::new(
            Method::DELETE,
            session_url(&self.s, url),
            self.push(),
            what.to_string(),
        );
        if let Err(e) = self.s.send(&req, &no_body).await {
            tracing::debug!("{what}: cancelling the upload: {e}");
        }
    }
}

/// The body of an upload: the bytes, or the source opened again from its start.
fn upload_body(src: &BlobSource, size: u64) -> Result<Body> {
    Ok(match src {
        BlobSource::Bytes(b) => Body::Bytes(b.clone()),
        other => Body::Stream(other.open()?, size),
    })
}

fn location(resp: &Response, what: &str) -> Result<String> {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .ok_or_else(|| {
            StoreError::Transport(format!("{what}: the registry gave no upload Location"))
        })
}

#[async_trait]
impl WriteStore for RemoteStore {
    /// POST then one streamed PUT; on a transient failure the upload is started again
    /// (a new POST) when the source can be read again.
    async fn push_blob(&self, desc: &Descriptor, src: &BlobSource) -> Result<()> {
        let what = format!("uploading blob {} to {}", desc.digest, self.describe());
        let mut attempt = 0;
        loop {
            let pending = self
                .pending
                .lock()
                .expect("pending lock")
                .remove(&desc.digest);
            let url = match pending {
                Some(u) => u,
                None => self.start_upload(&what).await?,
            };
            match self.put_blob(&url, desc, src, &what).await {
                Err(e) if self.upload_again(&e, src, &mut attempt).await => {}
                r => return r,
            }
        }
    }

    /// POST, the whole file in one `PATCH` while the caller hashes it, then the digest in
    /// a `PUT`: one request more than `push_blob`, no hashing pass before the upload.
    async fn push_blob_hashing(
        &self,
        size: u64,
        src: &BlobSource,
        mut digest: DigestLater,
    ) -> Result<bool> {
        let what = format!("uploading {size} bytes to {}", self.describe());
        let mut known: Option<String> = None;
        let mut attempt = 0;
        loop {
            let url = self.start_upload(&what).await?;
            let patch = self.patch_blob(&url, size, src, &what);
            tokio::pin!(patch);
            let sent = loop {
                tokio::select! {
                    r = &mut patch => break r,
                    d = super::wait_digest(&mut digest, &what), if known.is_none() => match d? {
                        Some(d) => known = Some(d),
                        // The registry has it: stop sending.
                        None => {
                            self.cancel_upload(&url, &what).await;
                            return Ok(false);
                        }
                    },
                }
            };
            let next = match sent {
                Err(e) if self.upload_again(&e, src, &mut attempt).await => continue,
                r => r?,
            };
            let d = match known.take() {
                Some(d) => d,
                None => match super::wait_digest(&mut digest, &what).await? {
                    Some(d) => d,
                    None => {
                        self.cancel_upload(&next, &what).await;
                        return Ok(false);
                    }
                },
            };
            self.commit_upload(&next, &d, &what).await?;
            return Ok(true);
        }
    }

    async fn push_manifest(
        &self,
        bytes: &[u8],
        media_type: &str,
        tag: Option<&str>,
    ) -> Result<String> {
        let digest = crate::digest::sha256(bytes);
        let target = tag.map(str::to_string).unwrap_or_else(|| digest.clone());
        let what = format!("pushing manifest to {}", self.at(&target));
        let mut req = self.req(Method::PUT, &format!("manifests/{target}"), true, what);
        req.content_type = Some(media_type.to_string());
        let body = Bytes::copy_from_slice(bytes);
        let resp = self.s.send(&req, &|| Ok(Body::Bytes(body.clone()))).await?;
        let resp = self
            .expect(resp, &[StatusCode::CREATED, StatusCode::OK], &req.what)
            .await?;
        // A registry with the referrers API says so with OCI-Subject; for one without,
        // the referrer goes into the `sha256-<hex>` fallback index (distribution spec).
        if !resp.headers().contains_key("OCI-Subject") {
            if let Some((subject, d)) = super::referrer_of(bytes, media_type) {
                let _one_writer = self.fallback_lock.lock().await;
                super::add_fallback_referrer(self, &subject, d).await?;
            }
        }
        Ok(digest)
    }

    /// `POST /blobs/uploads/?mount=…&from=…` with a token scoped to pull from the source
    /// repository too. A 202 (no mount) opens an upload the next push uses.
    async fn mount_blob(&self, digest: &str, from: &dyn ReadStore) -> Result<bool> {
        let Some((host, repo)) = from.registry_repo() else {
            return Ok(false);
        };
        if host != self.r.host() || repo == self.r.repository {
            return Ok(false);
        }
        let what = format!(
            "mounting blob {digest} from {repo} into {}",
            self.describe()
        );
        let mut req = self.req(
            Method::POST,
            &format!(
                "blobs/uploads/?mount={}&from={}",
                urlencode(digest),
                urlencode(&repo)
            ),
            true,
            what,
        );
        req.scope = format!("{} repository:{repo}:pull", self.push());
        let resp = self.s.send(&req, &no_body).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Ok(loc) = location(&resp, &req.what) {
                    self.pending
                        .lock()
                        .expect("pending lock")
                        .insert(digest.to_string(), loc);
                }
                tracing::debug!("mount of {digest} refused; uploading");
                Ok(false)
            }
            _ => {
                tracing::debug!("mount of {digest}: HTTP {}; uploading", resp.status());
                Ok(false)
            }
        }
    }
}

/// Ask the registry whether the credentials work, as `docker login` does.
pub async fn check_credentials(
    registry: &str,
    user: &str,
    pw: &str,
    opts: &Options,
) -> anyhow::Result<()> {
    let host = if registry == "docker.io" {
        "index.docker.io"
    } else {
        registry
    };
    let s = Session::new(
        registry,
        host,
        opts,
        Some(Some(Credential::basic(user, pw))),
    )?;
    super::http::check_login(&s, &format!("logging in to {registry} as {user}")).await?;
    Ok(())
}
