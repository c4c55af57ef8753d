//! Who may have signed keylessly: cosign's `--certificate-identity[-regexp]` and
//! `--certificate-oidc-issuer[-regexp]`.
//!
//! As in cosign (`CheckCertificatePolicy`, Go's `regexp.MatchString`), a regexp is not
//! anchored: `--certificate-identity-regexp 'github.com/acme/'` matches any identity that
//! contains it. Write `^…$` to pin it. The identity is matched against every subject
//! alternative name of the certificate (email, URI, DNS, IP, and Fulcio's UTF-8 otherName).

use std::fmt;

use anyhow::Result;
use regex::Regex;

use crate::bail_kind;
use crate::error::{fail, Kind};

/// An exact string or an unanchored regular expression.
#[derive(Clone)]
pub enum Matcher {
    Exact(String),
    Regexp(Regex),
}

impl Matcher {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Exact(s) => s == value,
            Matcher::Regexp(r) => r.is_match(value),
        }
    }

    /// From a cosign flag pair; exactly one must be given.
    fn from_pair(exact: Option<&str>, regexp: Option<&str>, what: &str) -> Result<Self> {
        match (exact, regexp) {
            (Some(e), None) => Ok(Matcher::Exact(e.to_string())),
            (None, Some(r)) => Regex::new(r).map(Matcher::Regexp).map_err(|e| {
                fail(
                    Kind::Usage,
                    format!("--{what}-regexp {r:?} is not a valid regular expression: {e}"),
                )
            }),
            (Some(_), Some(_)) => {
                bail_kind!(Kind::Usage, "give --{what} or --{what}-regexp, not both")
            }
            (None, None) => bail_kind!(
                Kind::Usage,
                "keyless verification needs --{what} or --{what}-regexp"
            ),
        }
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Exact(s) => write!(f, "{s:?}"),
            Matcher::Regexp(r) => write!(f, "matching /{}/", r.as_str()),
        }
    }
}

/// One accepted signer: a certificate identity (SAN) and its OIDC issuer.
#[derive(Clone, Debug)]
pub struct CertificateIdentity {
    pub identity: Matcher,
    pub issuer: Matcher,
}

impl CertificateIdentity {
    /// From cosign's four flags: `--certificate-identity`, `--certificate-identity-regexp`,
    /// `--certificate-oidc-issuer`, `--certificate-oidc-issuer-regexp`. Like cosign, both an
    /// identity and an issuer are required; a bad regexp is a usage error.
    pub fn from_flags(
        identity: Option<&str>,
        identity_regexp: Option<&str>,
        issuer: Option<&str>,
        issuer_regexp: Option<&str>,
    ) -> Result<Self> {
        Ok(CertificateIdentity {
            identity: Matcher::from_pair(identity, identity_regexp, "certificate-identity")?,
            issuer: Matcher::from_pair(issuer, issuer_regexp, "certificate-oidc-issuer")?,
        })
    }

    pub fn matches(&self, sans: &[String], issuer: Option<&str>) -> bool {
        issuer.is_some_and(|i| self.issuer.matches(i))
            && sans.iter().any(|s| self.identity.matches(s))
    }
}

impl fmt::Display for CertificateIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "identity {} from issuer {}", self.identity, self.issuer)
    }
}

/// Every subject alternative name of a DER certificate, as strings.
pub(crate) fn subject_alt_names(cert_der: &[u8]) -> Vec<String> {
    use x509_cert::der::{Decode, Encode};
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    let Ok(cert) = x509_cert::Certificate::from_der(cert_der) else {
        return Vec::new();
    };
    let Ok(Some((_, san))) = cert.tbs_certificate.get::<SubjectAltName>() else {
        return Vec::new();
    };
    san.0
        .iter()
        .filter_map(|name| match name {
            GeneralName::Rfc822Name(s) => Some(s.to_string()),
            GeneralName::UniformResourceIdentifier(s) => Some(s.to_string()),
            GeneralName::DnsName(s) => Some(s.to_string()),
            GeneralName::IpAddress(ip) => ip_text(ip.as_bytes()),
            // Fulcio's username identities: otherName 1.3.6.1.4.1.57264.1.7, a UTF8String.
            GeneralName::OtherName(other) => other.value.to_der().ok().and_then(|der| {
                x509_cert::der::asn1::Utf8StringRef::from_der(&der)
                    .ok()
                    .map(|s| s.as_str().to_string())
            }),
            _ => None,
        })
        .collect()
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::kind_of;

    #[test]
    fn flags_follow_cosign() {
        let id = CertificateIdentity::from_flags(
            None,
            Some("github.com/acme/"),
            Some("https://token.actions.githubusercontent.com"),
            None,
        )
        .unwrap();
        let sans = ["https://github.com/acme/x/.github/workflows/r.yml@refs/tags/v1".to_string()];
        // Unanchored, as Go's regexp.MatchString.
        assert!(id.matches(&sans, Some("https://token.actions.githubusercontent.com")));
        assert!(!id.matches(&sans, Some("https://token.actions.githubusercontent.com/")));
        assert!(!id.matches(&sans, None));
        let anchored =
            CertificateIdentity::from_flags(None, Some("^github.com/acme/"), None, Some(".*"))
                .unwrap();
        assert!(!anchored.matches(&sans, Some("x")));

        for (args, want) in [
            ((Some("a"), Some("b"), Some("i"), None), "not both"),
            ((None, None, Some("i"), None), "--certificate-identity or"),
            (
                (Some("a"), None, None, None),
                "--certificate-oidc-issuer or",
            ),
            (
                (None, Some("("), Some("i"), None),
                "not a valid regular expression",
            ),
        ] {
            let e = CertificateIdentity::from_flags(args.0, args.1, args.2, args.3).unwrap_err();
            assert_eq!(kind_of(&e), Kind::Usage);
            assert!(e.to_string().contains(want), "{e}");
        }
    }
}
