//! Raw HTTP against the registry through the `curl` binary (no client crate),
//! for tests that inspect or hand-build artifacts without kplug.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

use super::registry::Registry;
use super::require_bin;

/// `(status, body, headers)`
pub type Reply = (u16, Vec<u8>, Headers);

/// Response headers of the final response, in order, names as sent.
#[derive(Clone, Debug, Default)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// First value of header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Media types accepted by [`get_manifest`].
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// Runs `curl URL ARGS…` with silent mode, no proxy, no `Expect: 100-continue`,
/// and captures status, headers and body. Adds nothing else: no CA, no
/// credentials (see [`Registry::curl_args`]). `Err` when curl itself fails
/// (connection refused, TLS verification error, …), with its exit code and stderr.
pub fn curl<S: AsRef<OsStr>>(url: &str, args: &[S]) -> Result<Reply, String> {
    let bin = require_bin("curl", "curl");
    let tmp = tempfile::tempdir().unwrap();
    let (body_file, header_file) = (tmp.path().join("body"), tmp.path().join("headers"));
    let out = Command::new(bin)
        .args([
            "-sS",
            "-g",
            "--noproxy",
            "*",
            "-H",
            "Expect:",
            "--max-time",
            "600",
        ])
        .arg("-o")
        .arg(&body_file)
        .arg("-D")
        .arg(&header_file)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(format!(
            "curl {url} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let body = fs::read(&body_file).unwrap_or_default();
    let headers = parse_headers(&fs::read_to_string(&header_file).unwrap_or_default());
    Ok((status, body, headers))
}

/// Keeps the last header block (after any `100 Continue`), skipping its status line.
fn parse_headers(dump: &str) -> Headers {
    let last = dump
        .split("\r\n\r\n")
        .filter(|b| !b.trim().is_empty())
        .last()
        .unwrap_or("");
    let pairs = last.lines().skip(1).filter_map(|l| l.split_once(':'));
    Headers(
        pairs
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect(),
    )
}

/// `path` is either `/v2/…` or a full URL (e.g. an upload `Location`).
fn request(reg: &Registry, method: &str, path: &str, mut args: Vec<OsString>) -> Reply {
    let url = if path.starts_with("http://") || path.starts_with("https://") {
        path.to_string()
    } else {
        reg.url(path)
    };
    args.extend(reg.curl_args_for(&url).into_iter().map(OsString::from));
    if method == "HEAD" {
        args.push("--head".into());
    } else {
        args.extend(["-X".into(), method.into()]);
    }
    let (status, body, headers) =
        curl(&url, &args).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    // with --head, curl writes the headers to the body file
    (
        status,
        if method == "HEAD" { vec![] } else { body },
        headers,
    )
}

fn header(name: &str, value: &str) -> Vec<OsString> {
    // An empty value makes curl drop the header (e.g. its default Content-Type).
    vec!["-H".into(), format!("{name}: {value}").trim_end().into()]
}

/// Sends `body` (held in memory) with `Content-Type: content_type`.
fn with_body(reg: &Registry, method: &str, path: &str, content_type: &str, body: &[u8]) -> Reply {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    fs::write(tmp.path(), body).unwrap();
    let mut args = header("Content-Type", content_type);
    args.extend([
        "--data-binary".into(),
        OsString::from(format!("@{}", tmp.path().display())),
    ]);
    request(reg, method, path, args)
}

/// GET with the registry's CA and credentials. `accept` may be `""`.
pub fn http_get(reg: &Registry, path: &str, accept: &str) -> Reply {
    request(
        reg,
        "GET",
        path,
        if accept.is_empty() {
            vec![]
        } else {
            header("Accept", accept)
        },
    )
}
/// HEAD (body always empty).
pub fn http_head(reg: &Registry, path: &str, accept: &str) -> Reply {
    request(
        reg,
        "HEAD",
        path,
        if accept.is_empty() {
            vec![]
        } else {
            header("Accept", accept)
        },
    )
}
pub fn http_delete(reg: &Registry, path: &str) -> Reply {
    request(reg, "DELETE", path, vec![])
}
pub fn http_put(reg: &Registry, path: &str, content_type: &str, body: &[u8]) -> Reply {
    with_body(reg, "PUT", path, content_type, body)
}
pub fn http_post(reg: &Registry, path: &str, content_type: &str, body: &[u8]) -> Reply {
    with_body(reg, "POST", path, content_type, body)
}
pub fn http_patch(reg: &Registry, path: &str, content_type: &str, body: &[u8]) -> Reply {
    with_body(reg, "PATCH", path, content_type, body)
}
/// PUT streaming a file from disk (for big blobs).
pub fn http_put_file(reg: &Registry, path: &str, content_type: &str, file: &Path) -> Reply {
    let mut args = header("Content-Type", content_type);
    args.extend(["-T".into(), file.as_os_str().to_owned()]);
    request(reg, "PUT", path, args)
}

/// `sha256:<hex>`
pub fn sha256_digest(data: &[u8]) -> String {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// Adds `key=value` to a URL's query string.
pub fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// Starts an upload session: `POST /v2/<repo>/blobs/uploads/`, returns its `Location`.
pub fn start_upload(reg: &Registry, repo: &str) -> String {
    let (status, body, headers) = http_post(reg, &format!("/v2/{repo}/blobs/uploads/"), "", b"");
    assert_eq!(
        status,
        202,
        "start upload in {repo}: {}",
        String::from_utf8_lossy(&body)
    );
    headers
        .get("Location")
        .expect("upload Location")
        .to_string()
}

/// Monolithic upload: `POST /v2/<repo>/blobs/uploads/` then `PUT <location>?digest=…`.
/// Returns the digest.
pub fn push_blob(reg: &Registry, repo: &str, data: &[u8]) -> String {
    let digest = sha256_digest(data);
    let location = start_upload(reg, repo);
    let (status, body, _) = http_put(
        reg,
        &with_query(&location, "digest", &digest),
        "application/octet-stream",
        data,
    );
    assert_eq!(
        status,
        201,
        "push blob to {repo}: {}",
        String::from_utf8_lossy(&body)
    );
    digest
}

/// `PUT /v2/<repo>/manifests/<reference>`; returns the manifest digest.
pub fn push_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    manifest: &[u8],
) -> String {
    let (status, body, _) = http_put(
        reg,
        &format!("/v2/{repo}/manifests/{reference}"),
        media_type,
        manifest,
    );
    assert_eq!(
        status,
        201,
        "push manifest {repo}:{reference}: {}",
        String::from_utf8_lossy(&body)
    );
    sha256_digest(manifest)
}

/// `GET /v2/<repo>/manifests/<reference>` accepting OCI and Docker manifests and indexes.
pub fn get_manifest(reg: &Registry, repo: &str, reference: &str) -> Reply {
    http_get(
        reg,
        &format!("/v2/{repo}/manifests/{reference}"),
        MANIFEST_ACCEPT,
    )
}

/// `GET /v2/<repo>/blobs/<digest>`, asserting 200.
pub fn get_blob(reg: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let (status, body, _) = http_get(reg, &format!("/v2/{repo}/blobs/{digest}"), "");
    assert_eq!(status, 200, "get blob {repo}@{digest}");
    body
}
