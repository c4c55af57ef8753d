//! A Docker-style token server (the `realm` of a registry with `auth: token`):
//! checks HTTP Basic credentials, issues ES256 JWTs that distribution 2.8
//! accepts (`x5c` chain to the registry's `rootcertbundle`, plus the libtrust
//! `kid`), and records every scope it was asked for and what it granted.
//!
//! GET `/token?service=S&scope=repository:NAME:pull,push&scope=…` (Basic auth or
//! anonymous) and POST `/token` (OAuth2 `grant_type=password` form) are served.

use std::io::{self, BufReader};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::http1::{self, RequestHead, ResponseHead, Server};

pub const TOKEN_SERVICE: &str = "kplug-test-registry";
pub const TOKEN_ISSUER: &str = "kplug-test-token-issuer";

/// One `type:name:actions` access scope, e.g. `repository:kong/hello:pull,push`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Scope {
    pub fn repository(name: &str, actions: &[&str]) -> Scope {
        Scope {
            kind: "repository".into(),
            name: name.into(),
            actions: actions.iter().map(|a| a.to_string()).collect(),
        }
    }
    /// `type:name:actions`; the name may itself hold `:` (a host with a port).
    pub fn parse(s: &str) -> Option<Scope> {
        let (kind, rest) = s.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        Some(Scope {
            kind: kind.into(),
            name: name.into(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect(),
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// One request to the token endpoint.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub method: String,
    /// The authenticated user; `None` for anonymous requests (and bad credentials).
    pub user: Option<String>,
    pub service: String,
    /// Scopes as requested, in order.
    pub scopes: Vec<Scope>,
    /// Scopes put in the token (after the policy); empty when refused.
    pub granted: Vec<Scope>,
    /// 200, or 401 for bad credentials.
    pub status: u16,
}

/// Decides which of the requested actions a user (`None` = anonymous) gets.
pub type Policy = dyn Fn(Option<&str>, &Scope) -> Vec<String> + Send + Sync;

struct Signer {
    key: EcdsaKeyPair,
    /// DER of the leaf certificate holding the signing key (x5c[0]).
    leaf_der: Vec<u8>,
    /// PEM of the CA that signed the leaf: the registry's `rootcertbundle`.
    ca_pem: String,
    kid: String,
}

struct Shared {
    signer: Signer,
    user: String,
    password: String,
    log: Mutex<Vec<TokenRequest>>,
    policy: Mutex<Arc<Policy>>,
}

pub struct TokenServer {
    server: Server,
    shared: Arc<Shared>,
}

impl TokenServer {
    /// Starts on a free loopback port with one user. By default the user gets
    /// every action asked for and anonymous requests get none.
    pub fn start(user: &str, password: &str) -> TokenServer {
        let shared = Arc::new(Shared {
            signer: Signer::generate(),
            user: user.into(),
            password: password.into(),
            log: Mutex::new(vec![]),
            policy: Mutex::new(Arc::new(|user: Option<&str>, s: &Scope| {
                if user.is_some() {
                    s.actions.clone()
                } else {
                    vec![]
                }
            })),
        });
        let sh = shared.clone();
        let server = Server::start(move |client, _| {
            let _ = serve(client, &sh);
        });
        TokenServer { server, shared }
    }

    /// `http://127.0.0.1:PORT/token`, the registry's `realm`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }
    pub fn addr(&self) -> &str {
        self.server.addr()
    }
    /// The CA certificate (PEM) to give the registry as `rootcertbundle`.
    pub fn root_cert_pem(&self) -> &str {
        &self.shared.signer.ca_pem
    }
    pub fn credentials(&self) -> (&str, &str) {
        (&self.shared.user, &self.shared.password)
    }
    /// Replaces the grant policy.
    pub fn set_policy<F>(&self, f: F)
    where
        F: Fn(Option<&str>, &Scope) -> Vec<String> + Send + Sync + 'static,
    {
        *self.shared.policy.lock().unwrap() = Arc::new(f);
    }
    /// Every token request so far.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.log.lock().unwrap().clone()
    }
    /// Every scope asked for so far, as `type:name:actions` strings, in order.
    pub fn requested_scopes(&self) -> Vec<String> {
        self.requests()
            .iter()
            .flat_map(|r| r.scopes.iter().map(Scope::to_string))
            .collect()
    }
    /// A token for `subject` with `access`, signed like the served ones but not
    /// recorded (the harness's own curl requests use it).
    pub fn mint(&self, subject: &str, access: &[Scope]) -> String {
        self.shared.signer.token(subject, access)
    }
}

impl Signer {
    fn generate() -> Signer {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "kplug test token CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "kplug test token signer");
        let leaf_key = KeyPair::generate().unwrap(); // ECDSA P-256
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &leaf_key.serialize_der())
                .unwrap();
        Signer {
            key,
            leaf_der: leaf_cert.der().to_vec(),
            ca_pem: ca_cert.pem(),
            kid: libtrust_key_id(&rcgen::PublicKeyData::subject_public_key_info(&leaf_key)),
        }
    }

    fn token(&self, subject: &str, access: &[Scope]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "kid": self.kid,
            "x5c": [STANDARD.encode(&self.leaf_der)],
        });
        let access: Vec<_> = access
            .iter()
            .map(|s| serde_json::json!({"type": s.kind, "name": s.name, "actions": s.actions}))
            .collect();
        let claims = serde_json::json!({
            "iss": TOKEN_ISSUER,
            "sub": subject,
            "aud": TOKEN_SERVICE,
            "exp": now + 600,
            "nbf": now - 10,
            "iat": now,
            "jti": format!("{now}-{}", rand_u64()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .unwrap();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).unwrap();
    u64::from_le_bytes(b)
}

/// libtrust's key ID (what distribution 2.8 matches `kid` against): SHA-256 of
/// the DER SubjectPublicKeyInfo, first 240 bits, base32, in 12 groups of 4.
pub fn libtrust_key_id(spki_der: &[u8]) -> String {
    let b32 = data_encoding::BASE32_NOPAD.encode(&Sha256::digest(spki_der)[..30]);
    b32.as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":")
}

fn serve(client: TcpStream, sh: &Shared) -> io::Result<()> {
    let mut cr = BufReader::new(client.try_clone()?);
    let mut cw = client;
    while let Some(req) = http1::read_request_head(&mut cr)? {
        let body = http1::read_body(&mut cr, req.framing(), 1 << 20)?;
        let (head, body) = answer(sh, &req, &body);
        http1::respond(&mut cw, &req.method, head, &body)?;
    }
    Ok(())
}

fn answer(sh: &Shared, req: &RequestHead, body: &[u8]) -> (ResponseHead, Vec<u8>) {
    let json = |status: u16, v: serde_json::Value| {
        let mut h = ResponseHead::new(status);
        h.set_header("Content-Type", "application/json");
        (h, v.to_string().into_bytes())
    };
    if req.path() != "/token" {
        return json(404, serde_json::json!({"error": "not found"}));
    }
    let params: Vec<(String, String)> = if req.method == "POST" {
        form_urlencoded::parse(body).into_owned().collect()
    } else {
        req.query()
    };
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let creds = if req.method == "POST" {
        param("username").zip(param("password"))
    } else {
        basic_credentials(req)
    };
    let user = match &creds {
        Some((u, p)) if *u == sh.user && *p == sh.password => Some(u.clone()),
        Some(_) => None,
        None => None,
    };
    let scopes: Vec<Scope> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').filter_map(Scope::parse).collect::<Vec<_>>())
        .collect();
    let mut entry = TokenRequest {
        method: req.method.clone(),
        user: user.clone(),
        service: param("service").unwrap_or_default(),
        scopes: scopes.clone(),
        granted: vec![],
        status: 401,
    };
    if creds.is_some() && user.is_none() {
        sh.log.lock().unwrap().push(entry);
        return json(
            401,
            serde_json::json!({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}),
        );
    }
    let policy = sh.policy.lock().unwrap().clone();
    let granted: Vec<Scope> = scopes
        .iter()
        .map(|s| Scope {
            actions: policy(user.as_deref(), s),
            ..s.clone()
        })
        .filter(|s| !s.actions.is_empty())
        .collect();
    let token = sh.signer.token(user.as_deref().unwrap_or(""), &granted);
    entry.granted = granted;
    entry.status = 200;
    sh.log.lock().unwrap().push(entry);
    json(
        200,
        serde_json::json!({
            "token": token,
            "access_token": token,
            "expires_in": 600,
            "issued_at": chrono::Utc::now().to_rfc3339(),
        }),
    )
}

fn basic_credentials(req: &RequestHead) -> Option<(String, String)> {
    let v = req.header("authorization")?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = String::from_utf8(STANDARD.decode(b64.trim()).ok()?).ok()?;
    let (u, p) = raw.split_once(':')?;
    Some((u.into(), p.into()))
}
