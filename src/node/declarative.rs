//! Kong's declarative configuration (`kong.yml` or JSON): which plugins it uses, so
//! `doctor` can say which are not enabled before Kong refuses to start.

use std::path::Path;

use anyhow::{Context, Result};

use crate::error::{fail, Kind};

/// `_format_version`s Kong accepts.
pub const FORMAT_VERSIONS: &[&str] = &["1.1", "2.1", "3.0"];
const MAX_BYTES: u64 = 64 << 20;

/// A plugin entry and where it sits: `services[0].routes[1].plugins[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Use {
    pub name: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declarative {
    pub format_version: Option<String>,
    pub uses: Vec<Use>,
}

impl Declarative {
    /// The names used, sorted and deduplicated.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.uses.iter().map(|u| u.name.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Read a declarative file (YAML, or JSON), bounded.
pub fn load(path: &Path) -> Result<Declarative> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .with_context(|| format!("reading {}", path.display()))?
        .take(MAX_BYTES + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_BYTES {
        crate::bail_kind!(Kind::Usage, "{}: over {MAX_BYTES} bytes", path.display());
    }
    parse(&String::from_utf8_lossy(&buf))
        .map_err(|e| fail(Kind::Usage, format!("{}: {e:#}", path.display())))
}

pub fn parse(text: &str) -> Result<Declarative> {
    let v: serde_json::Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).context("not valid JSON")?
    } else {
        serde_yaml_ng::from_str(text).context("not valid YAML")?
    };
    let format_version = v.get("_format_version").map(|f| match f {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    let mut uses = Vec::new();
    walk(&v, "", &mut uses);
    Ok(Declarative {
        format_version,
        uses,
    })
}

/// Every `plugins:` list, at the top and nested under services, routes, consumers…
fn walk(v: &serde_json::Value, at: &str, out: &mut Vec<Use>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                if k == "plugins" {
                    if let Some(items) = child.as_array() {
                        for (i, p) in items.iter().enumerate() {
                            if let Some(n) = p.get("name").and_then(|n| n.as_str()) {
                                out.push(Use {
                                    name: n.to_string(),
                                    at: format!("{here}[{i}]"),
                                });
                            }
                            walk(p, &format!("{here}[{i}]"), out);
                        }
                        continue;
                    }
                }
                walk(child, &here, out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                walk(child, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_plugins_everywhere() {
        let y = "_format_version: \"3.0\"\nplugins:\n- name: top\nservices:\n- name: s\n  url: http://x\n  plugins:\n  - name: on-service\n  routes:\n  - paths: [/]\n    plugins:\n    - name: on-route\n      config: {}\nconsumers:\n- username: u\n  plugins:\n  - name: on-consumer\n";
        let d = parse(y).unwrap();
        assert_eq!(d.format_version.as_deref(), Some("3.0"));
        assert_eq!(d.names(), ["on-consumer", "on-route", "on-service", "top"]);
        assert!(d
            .uses
            .iter()
            .any(|u| u.at == "services[0].routes[0].plugins[0]"));
        let j = r#"{"_format_version": "1.1", "routes": [{"paths": ["/"], "plugins": [{"name": "j"}]}]}"#;
        let d = parse(j).unwrap();
        assert_eq!(
            (d.format_version.as_deref(), d.names()),
            (Some("1.1"), vec!["j".to_string()])
        );
        assert!(parse("a: [").is_err());
    }
}
