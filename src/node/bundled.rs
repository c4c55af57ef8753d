//! The plugins Kong ships: a custom plugin under one of these names shadows Kong's own
//! (or is shadowed by it, depending on `lua_package_path`), and `plugins = bundled,<name>`
//! lists it twice.
//!
//! Source: `kong/constants.lua`, the `plugins` table behind `BUNDLED_PLUGINS`, in
//! github.com/Kong/kong at commit 22246ef28c16842098369b494eef879222e30c7b (2026-07-01).
//! Kong Enterprise bundles more; those names are not listed here.

/// Kong's bundled plugin names, in the order `kong/constants.lua` lists them.
pub const BUNDLED_PLUGINS: &[&str] = &[
    "jwt",
    "acl",
    "correlation-id",
    "cors",
    "oauth2",
    "tcp-log",
    "udp-log",
    "file-log",
    "http-log",
    "key-auth",
    "hmac-auth",
    "basic-auth",
    "ip-restriction",
    "request-transformer",
    "response-transformer",
    "request-size-limiting",
    "rate-limiting",
    "response-ratelimiting",
    "syslog",
    "loggly",
    "datadog",
    "ldap-auth",
    "statsd",
    "bot-detection",
    "aws-lambda",
    "request-termination",
    "prometheus",
    "proxy-cache",
    "session",
    "acme",
    "grpc-gateway",
    "grpc-web",
    "pre-function",
    "post-function",
    "azure-functions",
    "zipkin",
    "opentelemetry",
    "ai-proxy",
    "ai-prompt-decorator",
    "ai-prompt-template",
    "ai-prompt-guard",
    "ai-request-transformer",
    "ai-response-transformer",
    "standard-webhooks",
    "redirect",
];

/// Whether `name` is one of Kong's bundled plugins.
pub fn is_bundled(name: &str) -> bool {
    BUNDLED_PLUGINS.contains(&name)
}

/// The warning `doctor` and `install` print for a custom plugin named like a bundled one.
pub fn clash_message(name: &str) -> String {
    format!(
        "{name} is the name of a plugin Kong ships (kong/constants.lua BUNDLED_PLUGINS): a custom \
         plugin of that name shadows Kong's own, or is shadowed by it, depending on \
         lua_package_path; rename the custom plugin"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::BUNDLED_PLUGINS.len(), 45);
        assert!(super::is_bundled("rate-limiting") && super::is_bundled("jwt"));
        assert!(!super::is_bundled("hello") && !super::is_bundled("bundled"));
    }
}
