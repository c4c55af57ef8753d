//! A repository in an OCI distribution registry, through `oci-client`.
//!
//! oci-client does the protocol and the token dance; this adds what it lacks (see
//! shared/docs/CRATES.md): retries with backoff for idempotent requests, streaming in both
//! directions with our own hashing, error kinds for exit codes, and no whole-blob buffers.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::{Options, ReadStore, Reader, Result, WriteStore, Writer};
use crate::error::{fail, Kind, StoreError};
use crate::oci::reference::RegistryRef;
use crate::oci::{self, Descriptor};

pub struct RemoteStore {
    client: Arc<Client>,
    r: RegistryRef,
    auth: RegistryAuth,
}

/// Loopback registries speak plain HTTP unless TLS is evidently wanted (a CA file or
/// `--insecure`), as go-containerregistry does for localhost.
fn plain_http_for(host: &str, opts: &Options) -> bool {
    if opts.plain_http {
        return true;
    }
    if !opts.ca_files.is_empty() || opts.insecure {
        return false;
    }
    let h = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    h == "localhost" || h == "127.0.0.1" || h == "[::1]" || h.starts_with("127.")
}

/// The `--ca-file` PEMs, read and checked once per store.
fn read_ca_files(opts: &Options) -> anyhow::Result<Vec<Vec<u8>>> {
    opts.ca_files
        .iter()
        .map(|p| {
            let data = std::fs::read(p).map_err(|e| {
                fail(
                    Kind::Usage,
                    format!("cannot read --ca-file {}: {e}", p.display()),
                )
            })?;
            if !String::from_utf8_lossy(&data).contains("-----BEGIN CERTIFICATE-----") {
                crate::bail_kind!(
                    Kind::Usage,
                    "--ca-file {} holds no PEM certificate",
                    p.display()
                );
            }
            Ok(data)
        })
        .collect()
}

pub fn client_for(host: &str, opts: &Options) -> anyhow::Result<Client> {
    client_with(host, opts, &read_ca_files(opts)?)
}

fn client_with(host: &str, opts: &Options, cas: &[Vec<u8>]) -> anyhow::Result<Client> {
    let extra = cas
        .iter()
        .map(|data| Certificate {
            encoding: CertificateEncoding::Pem,
            data: data.clone(),
        })
        .collect();
    let config = ClientConfig {
        protocol: if plain_http_for(host, opts) {
            ClientProtocol::HttpsExcept(vec![host.to_string()])
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: opts.insecure,
        extra_root_certificates: extra,
        // One streamed PUT per blob: no chunk-size rules to break (ECR) and curl's speed.
        use_monolithic_push: true,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(300)),
        user_agent: concat!("kplug/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    };
    // try_from, not new: new() silently falls back to defaults on a bad config.
    Client::try_from(config)
        .map_err(|e| fail(Kind::Usage, format!("configuring the HTTP client: {e}")))
}

fn status_of(e: &OciDistributionError) -> Option<u16> {
    match e {
        OciDistributionError::ServerError { code, .. } => Some(*code),
        OciDistributionError::UnauthorizedError { .. } => Some(401),
        OciDistributionError::RequestError(r) => r.status().map(|s| s.as_u16()),
        _ => None,
    }
}

fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_connect()
                || r.is_timeout()
                || r.status()
                    .is_some_and(|s| s.as_u16() == 429 || s.is_server_error())
        }
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|x| matches!(x.code, OciErrorCode::Toomanyrequests)),
        OciDistributionError::IoError(_) => true,
        e => status_of(e).is_some_and(|c| c == 429 || c >= 500),
    }
}

/// Give an oci-client error its kind and a message naming what failed and what to do.
pub fn map_err(e: OciDistributionError, what: &str) -> StoreError {
    let code = status_of(&e);
    let kind = match &e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => Kind::Auth,
        OciDistributionError::ImageManifestNotFoundError(_) => Kind::NotFound,
        OciDistributionError::DigestError(_) => Kind::Integrity,
        OciDistributionError::RegistryError { envelope, .. } => {
            if envelope
                .errors
                .iter()
                .any(|x| matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                Kind::Auth
            } else if envelope.errors.iter().any(|x| {
                matches!(
                    x.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                Kind::NotFound
            } else if envelope
                .errors
                .iter()
                .any(|x| matches!(x.code, OciErrorCode::DigestInvalid))
            {
                Kind::Integrity
            } else {
                Kind::Other
            }
        }
        _ => match code {
            Some(401) | Some(403) => Kind::Auth,
            Some(404) => Kind::NotFound,
            _ => Kind::Other,
        },
    };
    let hint = match kind {
        Kind::Auth => "; check the credentials (`kplug login REGISTRY -u USER --password-stdin`, or DOCKER_CONFIG / REGISTRY_AUTH_FILE)",
        Kind::NotFound => "; check the repository and tag (`kplug list-tags REPO`)",
        _ => "",
    };
    let mut detail = match &e {
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .map(|x| x.message.clone())
            .collect::<Vec<_>>()
            .join("; "),
        _ => e.to_string(),
    };
    if let OciDistributionError::RequestError(r) = &e {
        // reqwest's Display hides the cause (e.g. the TLS error); show the chain.
        let mut src = std::error::Error::source(r);
        while let Some(s) = src {
            detail.push_str(&format!(": {s}"));
            src = s.source();
        }
    }
    let msg = format!("{what}: {detail}{hint}");
    match kind {
        Kind::Auth => StoreError::Auth(msg),
        Kind::NotFound => StoreError::NotFound(msg),
        Kind::Integrity => StoreError::Integrity(msg),
        _ => StoreError::Transport(msg),
    }
}

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(4)
        .with_jitter()
}

impl RemoteStore {
    pub async fn new(r: &RegistryRef, opts: &Options) -> Result<Self> {
        let cas = read_ca_files(opts)?;
        let client = client_with(r.host(), opts, &cas)?;
        let auth = crate::oci::auth::credentials_for(&r.registry)?;
        // oci-client caches tokens but not "this registry needs none": with anonymous auth it
        // re-asks `GET /v2/` before every request, doubling round trips. So probe once; an
        // open registry (no challenge at all) gets an empty bearer credential, which
        // oci-client uses without asking anything and an open registry ignores. A registry
        // that challenges anonymous clients (Docker Hub's anonymous tokens) keeps the normal flow.
        let auth = match auth {
            RegistryAuth::Anonymous if open_registry(r.host(), opts, &cas).await => {
                RegistryAuth::Bearer(String::new())
            }
            a => a,
        };
        client.store_auth_if_needed(r.host(), &auth).await;
        Ok(RemoteStore {
            client: Arc::new(client),
            r: r.clone(),
            auth,
        })
    }

    fn oref(&self, tag_or_digest: &str) -> Reference {
        if tag_or_digest.starts_with("sha256:") {
            Reference::with_digest(
                self.r.registry.clone(),
                self.r.repository.clone(),
                tag_or_digest.to_string(),
            )
        } else {
            Reference::with_tag(
                self.r.registry.clone(),
                self.r.repository.clone(),
                tag_or_digest.to_string(),
            )
        }
    }

    fn repo_ref(&self) -> Reference {
        self.oref("latest")
    }

    fn at(&self, x: &str) -> String {
        if x.starts_with("sha256:") {
            format!("{}@{x}", self.r.repo_name())
        } else {
            format!("{}:{x}", self.r.repo_name())
        }
    }
}

/// True when `GET /v2/` answers 200 without credentials (no auth challenge at all).
async fn open_registry(host: &str, opts: &Options, cas: &[Vec<u8>]) -> bool {
    let scheme = if plain_http_for(host, opts) {
        "http"
    } else {
        "https"
    };
    let mut b = reqwest::Client::builder()
        .danger_accept_invalid_certs(opts.insecure)
        .connect_timeout(Duration::from_secs(10));
    for pem in cas {
        if let Ok(c) = reqwest::Certificate::from_pem(pem) {
            b = b.add_root_certificate(c);
        }
    }
    let Ok(c) = b.build() else { return false };
    matches!(c.get(format!("{scheme}://{host}/v2/")).send().await, Ok(r) if r.status().is_success())
}

fn oci_desc(d: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size as i64,
        ..Default::default()
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
        let r = self.oref(reference);
        let (bytes, _) = (|| {
            self.client
                .pull_manifest_raw(&r, &self.auth, oci::MANIFEST_ACCEPT)
        })
        .retry(backoff())
        .when(transient)
        .await
        .map_err(|e| map_err(e, &format!("fetching manifest {}", self.at(reference))))?;
        if bytes.len() > 4 << 20 {
            crate::bail_kind!(
                Kind::Unsafe,
                "manifest {} is over 4 MiB",
                self.at(reference)
            );
        }
        let desc = super::manifest_descriptor(&bytes, None);
        if reference.starts_with("sha256:") && desc.digest != reference {
            crate::bail_kind!(
                Kind::Integrity,
                "registry served content for {} that hashes to {}",
                self.at(reference),
                desc.digest
            );
        }
        Ok((bytes.to_vec(), desc))
    }

    async fn manifest_exists(&self, digest: &str) -> Result<bool> {
        let r = self.oref(digest);
        match (|| self.client.fetch_manifest_digest(&r, &self.auth))
            .retry(backoff())
            .when(transient)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match map_err(e, &format!("checking {}", self.at(digest))) {
                e if e.is_not_found() => Ok(false),
                e => Err(e),
            },
        }
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool> {
        let r = self.repo_ref();
        (|| self.client.blob_exists(&r, digest))
            .retry(backoff())
            .when(transient)
            .await
            .map_err(|e| map_err(e, &format!("checking blob {digest} in {}", self.describe())))
    }

    async fn fetch_blob(&self, desc: &Descriptor, sink: Writer<'_>) -> Result<()> {
        let r = self.repo_ref();
        let od = oci_desc(desc);
        let what = format!("blob {} from {}", desc.digest, self.describe());
        // Only opening the stream is retried: once bytes went to the sink we cannot rewind it.
        let stream = (|| self.client.pull_blob_stream(&r, &od))
            .retry(backoff())
            .when(transient)
            .await
            .map_err(|e| map_err(e, &format!("fetching {what}")))?;
        let body = tokio_util::io::StreamReader::new(
            stream.map(|c| c.map_err(|e| std::io::Error::other(e.to_string()))),
        );
        super::copy_hashed(body, sink, desc, &what).await
    }

    async fn list_tags(&self) -> Result<Vec<String>> {
        const PAGE: usize = 1000;
        let r = self.repo_ref();
        let mut all = Vec::new();
        let mut last: Option<String> = None;
        // Registries may cap `n` below what was asked, so only an empty page (or one that
        // does not move past `last`, from a registry ignoring it) ends the list: callers
        // rely on a complete list to know which signature tags exist.
        loop {
            let page = (|| {
                self.client
                    .list_tags(&r, &self.auth, Some(PAGE), last.as_deref())
            })
            .retry(backoff())
            .when(transient)
            .await
            .map_err(|e| map_err(e, &format!("listing tags of {}", self.describe())))?;
            let repeats = last.as_ref().is_some_and(|l| page.tags.contains(l));
            if page.tags.is_empty() || repeats {
                break;
            }
            last = page.tags.last().cloned();
            all.extend(page.tags);
        }
        Ok(all)
    }

    fn registry_repo(&self) -> Option<(String, String)> {
        Some((self.r.host().to_string(), self.r.repository.clone()))
    }
}

#[async_trait]
impl WriteStore for RemoteStore {
    async fn push_blob(&self, desc: &Descriptor, src: Reader) -> Result<()> {
        let r = self.repo_ref();
        let stream = futures_util::stream::unfold(src, |mut src| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = bytes::BytesMut::with_capacity(1 << 20);
            match src.read_buf(&mut buf).await {
                Ok(0) => None,
                Ok(_) => Some((Ok(buf.freeze()), src)),
                Err(e) => Some((Err(OciDistributionError::IoError(e)), src)),
            }
        });
        self.client
            .push_blob_stream(&r, stream, &desc.digest, Some(desc.size))
            .await
            .map_err(|e| {
                map_err(
                    e,
                    &format!("uploading blob {} to {}", desc.digest, self.describe()),
                )
            })?;
        Ok(())
    }

    async fn push_manifest(
        &self,
        bytes: &[u8],
        media_type: &str,
        tag: Option<&str>,
    ) -> Result<String> {
        let digest = crate::digest::sha256(bytes);
        let target = tag.map(str::to_string).unwrap_or_else(|| digest.clone());
        let r = self.oref(&target);
        let ct: reqwest::header::HeaderValue = media_type
            .parse()
            .map_err(|_| fail(Kind::Usage, format!("bad media type {media_type:?}")))?;
        let body = bytes::Bytes::copy_from_slice(bytes);
        (|| self.client.push_manifest_raw(&r, body.clone(), ct.clone()))
            .retry(backoff())
            .when(transient)
            .await
            .map_err(|e| map_err(e, &format!("pushing manifest to {}", self.at(&target))))?;
        Ok(digest)
    }

    async fn mount_blob(&self, digest: &str, from: &dyn ReadStore) -> Result<bool> {
        let Some((host, repo)) = from.registry_repo() else {
            return Ok(false);
        };
        if host != self.r.host() || repo == self.r.repository {
            return Ok(false);
        }
        let src = Reference::with_tag(self.r.registry.clone(), repo, "latest".into());
        match self.client.mount_blob(&self.repo_ref(), &src, digest).await {
            Ok(()) => Ok(true),
            // 202 means the registry refused to mount: upload instead.
            Err(e) => {
                tracing::debug!("mount of {digest} refused ({e}); uploading");
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
    use oci_client::RegistryOperation;
    let host = if registry == "docker.io" {
        "index.docker.io"
    } else {
        registry
    };
    let client = client_for(host, opts)?;
    let auth = RegistryAuth::Basic(user.to_string(), pw.to_string());
    // A token registry validates the password at its token endpoint; a basic-auth one
    // only on a real request, so probe a tag list (404 = authenticated but no such repo).
    let probe = Reference::with_tag(
        registry.to_string(),
        "kplug/login-probe".into(),
        "latest".into(),
    );
    client
        .auth(&probe, &auth, RegistryOperation::Pull)
        .await
        .map_err(|e| map_err(e, &format!("logging in to {registry}")))?;
    match client.list_tags(&probe, &auth, Some(1), None).await {
        Ok(_) => Ok(()),
        Err(e) => match map_err(e, &format!("logging in to {registry} as {user}")) {
            e if e.is_not_found() => Ok(()),
            e => Err(e.into()),
        },
    }
}
