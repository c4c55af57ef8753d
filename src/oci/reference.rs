//! Parsing of everything a user can name as a source or destination.
//!
//! Registry references follow the docker grammar (`registry/repo[:tag][@sha256:…]`, with
//! Docker Hub normalisation); local stores follow skopeo's transports:
//! `oci:DIR[:REF][@sha256:…]` and `oci-archive:FILE[:REF][@sha256:…]`, where DIR ends at the
//! first `:` and REF is the entry's `org.opencontainers.image.ref.name`, either `TAG` or
//! `NAME:TAG`; and `docker-archive:FILE`. A single word after DIR is a tag, as in skopeo,
//! unless only a name can have its shape (`kong/hello`). Without a REF, a layout or archive
//! holding one artifact means that one (see `store::choose_in_index`).

use std::fmt;
use std::path::PathBuf;

use crate::error::{fail, Kind};

pub const DOCKER_HUB: &str = "docker.io";

/// A reference into a registry repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryRef {
    /// Normalised registry name (`docker.io` for Docker Hub).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl RegistryRef {
    /// Host to talk to: Docker Hub's API lives at `index.docker.io`.
    pub fn host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            "index.docker.io"
        } else {
            &self.registry
        }
    }

    /// `registry/repo`, the form cosign writes as `docker-reference`.
    pub fn repo_name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repo_name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Where content lives: a registry repository or a local store, plus what to address in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Registry(RegistryRef),
    /// OCI image layout directory; `name` scopes tags like a repository (`NAME:TAG` in
    /// `org.opencontainers.image.ref.name`), skopeo's bare `oci:DIR:TAG` has no name.
    OciDir {
        path: PathBuf,
        name: Option<String>,
        tag: Option<String>,
        digest: Option<String>,
    },
    OciArchive {
        path: PathBuf,
        name: Option<String>,
        tag: Option<String>,
        digest: Option<String>,
    },
    DockerArchive {
        path: PathBuf,
    },
}

impl Location {
    pub fn tag(&self) -> Option<&str> {
        match self {
            Location::Registry(r) => r.tag.as_deref(),
            Location::OciDir { tag, .. } | Location::OciArchive { tag, .. } => tag.as_deref(),
            Location::DockerArchive { .. } => None,
        }
    }

    pub fn digest(&self) -> Option<&str> {
        match self {
            Location::Registry(r) => r.digest.as_deref(),
            Location::OciDir { digest, .. } | Location::OciArchive { digest, .. } => {
                digest.as_deref()
            }
            Location::DockerArchive { .. } => None,
        }
    }

    /// What to ask a store for: the digest when there is one, else the tag (`latest` when
    /// neither is given, as docker does).
    pub fn reference(&self) -> &str {
        self.digest().or(self.tag()).unwrap_or("latest")
    }

    /// The name an artifact goes by in its store: `NAME:TAG` or `TAG` (a layout's
    /// `ref.name`), a registry tag; `None` without a tag.
    pub fn ref_name(&self) -> Option<String> {
        match self {
            Location::OciDir { name, tag, .. } | Location::OciArchive { name, tag, .. } => {
                match (name, tag) {
                    (Some(n), Some(t)) => Some(format!("{n}:{t}")),
                    (None, Some(t)) => Some(t.clone()),
                    _ => None,
                }
            }
            _ => self.tag().map(str::to_string),
        }
    }

    /// Is this a local store (a layout or an archive), where a missing tag means "the only
    /// artifact" rather than `latest`?
    pub fn is_local(&self) -> bool {
        !matches!(self, Location::Registry(_))
    }

    /// The repository-ish name used as `docker-reference` in signatures.
    pub fn repo_name(&self) -> String {
        match self {
            Location::Registry(r) => r.repo_name(),
            Location::OciDir { name, path, .. } | Location::OciArchive { name, path, .. } => {
                name.clone().unwrap_or_else(|| path.display().to_string())
            }
            Location::DockerArchive { path } => path.display().to_string(),
        }
    }

    /// Same store, addressed by digest (what every step after resolution uses).
    pub fn at_digest(&self, d: &str) -> Location {
        let mut l = self.clone();
        match &mut l {
            Location::Registry(r) => {
                r.digest = Some(d.to_string());
            }
            Location::OciDir { digest, .. } | Location::OciArchive { digest, .. } => {
                *digest = Some(d.to_string());
            }
            Location::DockerArchive { .. } => {}
        }
        l
    }

    /// `REPO@DIGEST` (cosign's output form): the location by digest, without its tag.
    pub fn pinned(&self, d: &str) -> String {
        let mut l = self.at_digest(d);
        match &mut l {
            Location::Registry(r) => r.tag = None,
            Location::OciDir { tag, .. } | Location::OciArchive { tag, .. } => *tag = None,
            Location::DockerArchive { .. } => {}
        }
        l.to_string()
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Registry(r) => write!(f, "{r}"),
            Location::OciDir {
                path,
                name,
                tag,
                digest,
            }
            | Location::OciArchive {
                path,
                name,
                tag,
                digest,
            } => {
                let scheme = if matches!(self, Location::OciDir { .. }) {
                    "oci"
                } else {
                    "oci-archive"
                };
                write!(f, "{scheme}:{}", path.display())?;
                match (name, tag) {
                    (Some(n), Some(t)) => write!(f, ":{n}:{t}")?,
                    (Some(n), None) => write!(f, ":{n}")?,
                    (None, Some(t)) => write!(f, ":{t}")?,
                    (None, None) => {}
                }
                if let Some(d) = digest {
                    write!(f, "@{d}")?;
                }
                Ok(())
            }
            Location::DockerArchive { path } => write!(f, "docker-archive:{}", path.display()),
        }
    }
}

fn bad(input: &str, why: &str) -> anyhow::Error {
    fail(
        Kind::Usage,
        format!(
            "invalid reference {input:?}: {why}; expected REGISTRY/REPO[:TAG][@sha256:…], \
             oci:DIR[:REF], oci-archive:FILE[:REF] (REF = TAG or NAME:TAG) or docker-archive:FILE"
        ),
    )
}

fn check_digest(input: &str, d: &str) -> anyhow::Result<String> {
    crate::digest::hex_of(d).map_err(|_| bad(input, "digest must be sha256:<64 hex digits>"))?;
    Ok(d.to_string())
}

fn valid_tag(t: &str) -> bool {
    // distribution's tag grammar: [\w][\w.-]{0,127}
    !t.is_empty()
        && t.len() <= 128
        && t.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn valid_repo(r: &str) -> bool {
    // path components: lowercase alnum separated by `.`, `_`, `__`, `-`+
    !r.is_empty()
        && r.split('/').all(|c| {
            !c.is_empty()
                && c.chars()
                    .next()
                    .is_some_and(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.chars()
                    .last()
                    .is_some_and(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        })
}

/// `host[:port]`: DNS labels or an IP (IPv6 in brackets), a port of 1–65535 digits.
fn check_registry(r: &str) -> Result<(), String> {
    let (host, port) = match r.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, rest)) if addr.parse::<std::net::Ipv6Addr>().is_ok() => {
                (addr, rest.strip_prefix(':'))
            }
            _ => return Err(format!("{r:?} is not a registry host (bad IPv6 address)")),
        },
        None => match r.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        },
    };
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |n| n == 0) {
            let transport = match r.split_once(':') {
                Some((t, _)) if !t.contains('.') => format!(
                    "; `{t}:` is not a transport kplug knows (oci:, oci-archive:, docker-archive:)"
                ),
                _ => String::new(),
            };
            return Err(format!(
                "{r:?} is not a registry host[:port] (the port must be a number){transport}"
            ));
        }
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !r.starts_with('[') && !host.split('.').all(label_ok) {
        return Err(format!(
            "{host:?} is not a registry host name (letters, digits, `-` and `.` only)"
        ));
    }
    Ok(())
}

/// Parse a registry reference with Docker Hub normalisation.
pub fn parse_registry(input: &str) -> anyhow::Result<RegistryRef> {
    let (rest, digest) = match input.split_once('@') {
        Some((r, d)) => (r, Some(check_digest(input, d)?)),
        None => (input, None),
    };
    // A tag is a `:` after the last `/` (a `:` before it belongs to host:port).
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (
            &rest[..last_slash + i],
            Some(rest[last_slash + i + 1..].to_string()),
        ),
        None => (rest, None),
    };
    if let Some(t) = &tag {
        if !valid_tag(t) {
            return Err(bad(
                input,
                "tag may hold only letters, digits, `_`, `.`, `-` (128 max)",
            ));
        }
    }
    if name.is_empty() {
        return Err(bad(input, "empty repository name"));
    }
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if let Err(why) = check_registry(&registry) {
        return Err(bad(input, &why));
    }
    let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
        DOCKER_HUB.to_string()
    } else {
        registry
    };
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    if !valid_repo(&repository) {
        return Err(bad(
            input,
            "repository must be lowercase letters, digits and `._-` separated by `/`",
        ));
    }
    Ok(RegistryRef {
        registry,
        repository,
        tag,
        digest,
    })
}

/// Split `DIR[:NAME[:TAG]][@digest]` the way skopeo splits `oci:` references: the path
/// ends at the first `:`.
/// `(path, name, tag, digest)` of a local store reference.
type LocalParts = (PathBuf, Option<String>, Option<String>, Option<String>);

fn parse_local(input: &str, body: &str) -> anyhow::Result<LocalParts> {
    let (body, digest) = match body.find("@sha256:") {
        Some(i) => (&body[..i], Some(check_digest(input, &body[i + 1..])?)),
        None => (body, None),
    };
    let (path, rest) = match body.split_once(':') {
        Some((p, r)) => (p, Some(r)),
        None => (body, None),
    };
    if path.is_empty() {
        return Err(bad(input, "missing path"));
    }
    let (name, tag) = match rest {
        None | Some("") => (None, None),
        Some(r) => match r.rsplit_once(':') {
            Some((n, t)) => (Some(n.to_string()), Some(t.to_string())),
            // With a digest, the single word is a name, otherwise a tag (skopeo's form).
            // One word is a tag, as in skopeo, unless it can only be a name (`plugins/hello`).
            None if digest.is_some() || (!valid_tag(r) && valid_repo(r)) => {
                (Some(r.to_string()), None)
            }
            None => (None, Some(r.to_string())),
        },
    };
    if let Some(t) = &tag {
        if !valid_tag(t) {
            return Err(bad(
                input,
                "tag may hold only letters, digits, `_`, `.`, `-`",
            ));
        }
    }
    if let Some(n) = &name {
        if !valid_repo(n) {
            return Err(bad(
                input,
                "name must be lowercase letters, digits and `._-/`",
            ));
        }
    }
    Ok((PathBuf::from(path), name, tag, digest))
}

/// Parse any location.
pub fn parse(input: &str) -> anyhow::Result<Location> {
    if let Some(body) = input.strip_prefix("oci:") {
        let (path, name, tag, digest) = parse_local(input, body)?;
        return Ok(Location::OciDir {
            path,
            name,
            tag,
            digest,
        });
    }
    if let Some(body) = input.strip_prefix("oci-archive:") {
        let (path, name, tag, digest) = parse_local(input, body)?;
        return Ok(Location::OciArchive {
            path,
            name,
            tag,
            digest,
        });
    }
    if let Some(body) = input.strip_prefix("docker-archive:") {
        if body.is_empty() {
            return Err(bad(input, "missing path"));
        }
        // skopeo allows docker-archive:FILE:REF; the ref only picks among several images.
        let path = body.split_once(':').map(|(p, _)| p).unwrap_or(body);
        return Ok(Location::DockerArchive {
            path: PathBuf::from(path),
        });
    }
    Ok(Location::Registry(parse_registry(input)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

    #[test]
    fn docker_hub_normalisation() {
        let r = parse_registry("foo").unwrap();
        assert_eq!(r.registry, "docker.io");
        assert_eq!(r.repository, "library/foo");
        assert_eq!(r.host(), "index.docker.io");
        assert_eq!(r.tag, None);
        let r = parse_registry("kong/plugin:1.0").unwrap();
        assert_eq!(
            (r.repository.as_str(), r.tag.as_deref()),
            ("kong/plugin", Some("1.0"))
        );
        let r = parse_registry("index.docker.io/foo").unwrap();
        assert_eq!(r.repo_name(), "docker.io/library/foo");
    }

    #[test]
    fn registry_with_port_tag_and_digest() {
        let r = parse_registry(&format!("127.0.0.1:5000/a/b:v1@{D}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "a/b");
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.digest.as_deref(), Some(D));
        assert_eq!(r.to_string(), format!("127.0.0.1:5000/a/b:v1@{D}"));
        let r = parse_registry("localhost:5000/x").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.tag.as_deref()),
            ("localhost:5000", None)
        );
        let r = parse_registry("localhost/x:y").unwrap();
        assert_eq!(r.registry, "localhost");
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "Foo",
            "a//b",
            "a:b:c",
            "x@sha256:12",
            "x:-bad",
            "reg.io/a/../b",
            "A:kong/hello:0.1.0",
            "reg.io:0/a",
            "reg.io:99999/a",
            "re_g.io/a",
            "[::zz]:5000/a",
        ] {
            assert!(parse(bad).is_err(), "{bad} should be refused");
        }
        let e = parse("Foo").unwrap_err();
        assert_eq!(crate::error::kind_of(&e), Kind::Usage);
        let e = format!("{:#}", parse("A:kong/hello:0.1.0").unwrap_err());
        assert!(
            e.contains("`A:` is not a transport") && e.contains("oci:DIR"),
            "{e}"
        );
        for good in [
            "[::1]:5000/a/b:1",
            "localhost:5000/a",
            "my-reg.example.com/x/y",
        ] {
            assert!(parse(good).is_ok(), "{good} should parse");
        }
    }

    #[test]
    fn local_transports() {
        assert_eq!(
            parse("oci:./store:hello:0.1.0").unwrap(),
            Location::OciDir {
                path: "./store".into(),
                name: Some("hello".into()),
                tag: Some("0.1.0".into()),
                digest: None
            }
        );
        assert_eq!(
            parse("oci:/tmp/x:latest").unwrap(),
            Location::OciDir {
                path: "/tmp/x".into(),
                name: None,
                tag: Some("latest".into()),
                digest: None
            }
        );
        assert_eq!(
            parse(&format!("oci:dir@{D}")).unwrap(),
            Location::OciDir {
                path: "dir".into(),
                name: None,
                tag: None,
                digest: Some(D.into())
            }
        );
        assert_eq!(
            parse(&format!("oci:dir:hello@{D}")).unwrap().to_string(),
            format!("oci:dir:hello@{D}")
        );
        assert_eq!(
            parse("docker-archive:/tmp/a.tar").unwrap(),
            Location::DockerArchive {
                path: "/tmp/a.tar".into()
            }
        );
        assert!(matches!(
            parse("oci-archive:b.tar:v1").unwrap(),
            Location::OciArchive { tag: Some(t), .. } if t == "v1"
        ));
    }
}
