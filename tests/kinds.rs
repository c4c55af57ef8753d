//! The three kinds of Kong plugin with real parts: a Python plugin server on PyPI's
//! `kong-pdk`, a go-pdk-shaped server, rocks built by Debian's `luarocks`, LuaJIT loading
//! what was installed, and `doctor` against fixture kong.conf + declarative files.
//! The library tests drive `kplug::node` directly; `every_kind_through_the_verbs` runs the
//! same three kinds through `kplug` against a real registry.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kplug::error::{kind_of, Kind};
use kplug::node::doctor::{self, Finding, Options, Severity};
use kplug::node::external::{self, Runtime, ServerLayout, ServerManifest};
use kplug::node::kinds;
use kplug::node::kongconf::{self, KongConf};
use kplug::node::limits::Limits;
use kplug::node::state::{self, Prefix, Receipt};
use kplug::node::unpack::{self, NameHints};

fn write(p: &Path, body: &str) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, body).unwrap();
}

fn exec(p: &Path, body: &str) {
    write(p, body);
    fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The Python interpreter that has `kong-pdk` (scripts/test.sh installs it).
fn python_with_pdk() -> String {
    run(Command::new("python3").args(["-c", "import kong_pdk, sys; print(sys.executable)"]))
        .trim()
        .to_string()
}

/// A dedicated kong-pdk plugin server, as Kong's Python PDK docs write one.
fn py_server(path: &Path, python: &str, version: &str) {
    exec(
        path,
        &format!(
            "#!{python}\nimport kong_pdk.pdk.kong as kong\n\
             Schema = ({{\"message\": {{\"type\": \"string\"}}}},)\nversion = '{version}'\npriority = 100\n\
             class Plugin(object):\n    def __init__(self, config):\n        self.config = config\n\
             \n    def access(self, kong: kong.kong):\n        kong.response.set_header('x-hello', 'py')\n\n\
             if __name__ == '__main__':\n    from kong_pdk.cli import start_dedicated_server\n\
             \x20   start_dedicated_server('py-hello', Plugin, version, priority, Schema)\n"
        ),
    );
}

fn receipt(name: &str, digest: &str) -> Receipt {
    Receipt {
        name: name.to_string(),
        version: Some("0.1.0".into()),
        reference: format!("reg.example/{name}:0.1.0"),
        digest: digest.to_string(),
        signer: None,
        verified_at: None,
        installed_at: state::now_rfc3339(),
        files: vec![],
        ..Default::default()
    }
}

/// Unpack the packed server `packed` and install it under `prefix`, holding the lock as
/// the CLI does; the archive must be a server of `runtime`.
fn install_server(
    prefix: &Prefix,
    packed: &Path,
    layout: &ServerLayout,
    receipt: Receipt,
    runtime: Runtime,
) -> anyhow::Result<(state::Outcome, Vec<external::PluginInfo>)> {
    let _lock = state::lock(prefix).unwrap();
    let staging = state::staging_dir(prefix).unwrap();
    let ex = kinds::extract_file(
        packed,
        staging.path(),
        &Limits::DEFAULT,
        &NameHints::default(),
        &[],
    )
    .unwrap();
    assert!(ex.plugins.is_empty());
    let server = ex.server.expect("a plugin server");
    assert_eq!(server.manifest.runtime, runtime);
    external::install(prefix, &server, layout, receipt, Duration::from_secs(30))
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn errors(f: &[Finding]) -> Vec<String> {
    f.iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{}: {}", f.plugin, f.message))
        .collect()
}

fn has(f: &[Finding], plugin: &str, sev: Severity, text: &str) -> bool {
    f.iter()
        .any(|x| x.plugin == plugin && x.severity == sev && x.message.contains(text))
}

/// pack → unpack → install → query → kong.conf → doctor → list → update → rollback →
/// binary removed → doctor fails → uninstall, for a kong-pdk server and a go-pdk-shaped one.
#[test]
fn external_plugin_servers() {
    let t = tempfile::tempdir().unwrap();
    let python = python_with_pdk();
    let prefix = Prefix::new(t.path().join("lua"));
    let layout = ServerLayout {
        bin_dir: t.path().join("bin"),
        lib_dir: t.path().join("lib"),
        kong_prefix: "/usr/local/kong".into(),
    };
    let install = |src: &Path, m: &ServerManifest| {
        let packed = external::pack(
            src,
            m,
            &t.path().join(format!("{}.tar.gz", m.name)),
            &Limits::DEFAULT,
        )
        .unwrap();
        let r = receipt(&m.name, &packed.digest);
        install_server(&prefix, &packed.path, &layout, r, m.runtime).unwrap()
    };

    let py_src = t.path().join("src/py-hello");
    py_server(&py_src, &python, "0.1.0");
    let py = ServerManifest {
        name: "py-hello".into(),
        version: Some("0.1.0".into()),
        runtime: Runtime::Python,
        entrypoint: "py-hello".into(),
        query_args: None,
        socket: None,
    };
    let (_, infos) = install(&py_src, &py);
    assert_eq!(
        (infos[0].name.as_str(), infos[0].version.as_str()),
        ("py-hello", "0.1.0")
    );
    assert_eq!(infos[0].phases, ["access"]);

    // go-pdk prints {Protocol, SocketPath, Plugins:[…]} on -dump; its name is its file name.
    let go_src = t.path().join("src/go-hello");
    exec(&go_src, "#!/bin/sh\n[ \"$1\" = -dump ] || exit 2\nprintf '%s\\n' '{\"Protocol\":\"ProtoBuf:1\",\"SocketPath\":\"/usr/local/kong/go-hello.socket\",\"Plugins\":[{\"Name\":\"go-hello\",\"Phases\":[\"access\",\"log\"],\"Version\":\"1.0.0\",\"Priority\":5,\"Schema\":{\"name\":\"go-hello\",\"fields\":[{\"config\":{\"type\":\"record\",\"fields\":[]}}]}}]}'\n");
    let go = ServerManifest {
        name: "go-hello".into(),
        runtime: Runtime::Go,
        entrypoint: "go-hello".into(),
        ..py.clone()
    };
    let (_, infos) = install(&go_src, &go);
    assert_eq!(infos[0].phases, ["access", "log"]);

    // kong.conf: the lines written, parsed back; the rest of the file kept.
    let conf_path = t.path().join("kong.conf");
    let original = "# operator's notes\nplugins = bundled   # keep\nlog_level = info\n";
    fs::write(&conf_path, original).unwrap();
    let mut conf = KongConf::load(&conf_path).unwrap();
    for n in ["py-hello", "go-hello"] {
        assert!(external::enable(
            &mut conf,
            n,
            &external::read_server(&prefix, n).unwrap().unwrap()
        ));
    }
    conf.save().unwrap();
    let conf = KongConf::load(&conf_path).unwrap();
    let bin = |n: &str| layout.bin_dir.join(n).display().to_string();
    assert_eq!(conf.plugins(&no_env), ["bundled", "py-hello", "go-hello"]);
    assert_eq!(
        conf.list("pluginserver_names", &no_env),
        ["py-hello", "go-hello"]
    );
    assert_eq!(
        conf.get("pluginserver_py_hello_start_cmd"),
        Some(bin("py-hello"))
    );
    assert_eq!(
        conf.get("pluginserver_py_hello_query_cmd"),
        Some(format!("{} --dump", bin("py-hello")))
    );
    assert_eq!(
        conf.get("pluginserver_py_hello_socket").as_deref(),
        Some("/usr/local/kong/py-hello.sock")
    );
    assert_eq!(
        conf.get("pluginserver_go_hello_query_cmd"),
        Some(format!("{} -dump", bin("go-hello")))
    );
    assert_eq!(
        conf.get("pluginserver_go_hello_socket").as_deref(),
        Some("/usr/local/kong/go-hello.socket")
    );
    let text = fs::read_to_string(&conf_path).unwrap();
    assert!(
        text.starts_with(
            "# operator's notes\nplugins = bundled,py-hello,go-hello   # keep\nlog_level = info\n"
        ),
        "{text}"
    );

    let f = doctor::check_with(
        &conf,
        &no_env,
        std::slice::from_ref(&prefix.root),
        &Options::default(),
    );
    assert!(errors(&f).is_empty(), "{:#?}", f);
    assert!(has(
        &f,
        "py-hello",
        Severity::Ok,
        "served by plugin server py-hello"
    ));
    assert!(has(
        &f,
        "go-hello",
        Severity::Ok,
        "served by plugin server go-hello"
    ));
    let listed = kinds::list(&prefix).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed
        .iter()
        .all(|l| l.modified.is_empty() && l.missing.is_empty()));

    // An update keeps the previous version; rollback toggles between them.
    py_server(&py_src, &python, "0.2.0");
    let (outcome, infos) = install(
        &py_src,
        &ServerManifest {
            version: Some("0.2.0".into()),
            ..py.clone()
        },
    );
    assert!(matches!(
        outcome,
        state::Outcome::Installed {
            previous: Some(_),
            ..
        }
    ));
    assert_eq!(infos[0].version, "0.2.0");
    // The same version again (a bootstrap script run twice) changes nothing: the kept
    // version is still 0.1.0, not a copy of 0.2.0.
    let (outcome, infos) = install(
        &py_src,
        &ServerManifest {
            version: Some("0.2.0".into()),
            ..py.clone()
        },
    );
    assert_eq!(outcome, state::Outcome::Unchanged);
    assert_eq!(infos[0].version, "0.2.0");
    let dump = |n: &str| run(Command::new(layout.bin_dir.join(n)).arg("--dump"));
    {
        let _lock = state::lock(&prefix).unwrap();
        kinds::rollback(&prefix, "py-hello", false).unwrap();
        assert!(dump("py-hello").contains("\"0.1.0\""));
        kinds::rollback(&prefix, "py-hello", false).unwrap();
        assert!(dump("py-hello").contains("\"0.2.0\""));

        // A kept version changed since is not put back unless forced, as for Lua plugins.
        let kept = prefix.state_dir().join("backup/py-hello.server/bin");
        let body = std::fs::read_to_string(&kept).unwrap();
        std::fs::write(&kept, body.replace("0.1.0", "6.6.6")).unwrap();
        let e = kinds::rollback(&prefix, "py-hello", false).unwrap_err();
        assert_eq!(kind_of(&e), Kind::Integrity, "{e:#}");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("bin (modified)") && msg.contains("--force"),
            "{msg}"
        );
        assert!(dump("py-hello").contains("\"0.2.0\""), "nothing changed");
        kinds::rollback(&prefix, "py-hello", true).unwrap();
        assert!(dump("py-hello").contains("\"6.6.6\""));
        kinds::rollback(&prefix, "py-hello", false).unwrap();
        assert!(dump("py-hello").contains("\"0.2.0\""));
    }

    // A file kplug did not install is never replaced.
    exec(&layout.bin_dir.join("foreign"), "#!/bin/sh\n");
    let foreign = ServerManifest {
        name: "foreign".into(),
        entrypoint: "foreign".into(),
        ..go.clone()
    };
    let packed = external::pack(
        &go_src,
        &foreign,
        &t.path().join("f.tar.gz"),
        &Limits::DEFAULT,
    )
    .unwrap();
    let r = receipt("foreign", "sha256:0");
    let e = install_server(&prefix, &packed.path, &layout, r, Runtime::Go).unwrap_err();
    assert_eq!(kind_of(&e), Kind::Usage, "{e:#}");
    assert_eq!(
        fs::read_to_string(layout.bin_dir.join("foreign")).unwrap(),
        "#!/bin/sh\n"
    );

    // Binary gone: doctor says Kong cannot start it.
    fs::remove_file(layout.bin_dir.join("py-hello")).unwrap();
    let f = doctor::check_with(
        &conf,
        &no_env,
        std::slice::from_ref(&prefix.root),
        &Options::default(),
    );
    let errs = errors(&f);
    assert!(
        errs.iter()
            .any(|e| e.contains("start command") && e.contains("is not an executable file")),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("py-hello plugin is enabled but not installed")),
        "{errs:#?}"
    );

    // Uninstall removes what kplug put there, and only that.
    let _lock = state::lock(&prefix).unwrap();
    kinds::uninstall(&prefix, "py-hello").unwrap();
    assert!(kinds::uninstall(&prefix, "go-hello")
        .unwrap()
        .leftovers
        .is_empty());
    assert!(!layout.bin_dir.join("go-hello").exists());
    assert!(layout.bin_dir.join("foreign").exists());
    assert!(kinds::list(&prefix).unwrap().is_empty());
    let mut conf = KongConf::load(&conf_path).unwrap();
    external::disable(&mut conf, "py-hello");
    external::disable(&mut conf, "go-hello");
    assert_eq!(conf.text(), original);
}

/// The source tree of `rocky`, a plugin whose rockspec maps `src/` and carries a
/// `resty.*` module besides.
fn rocky_source(dir: &Path) -> PathBuf {
    let src = dir.join("kong-plugin-rocky");
    write(
        &src.join("kong-plugin-rocky-0.1.0-1.rockspec"),
        "local plugin_name = \"rocky\"\npackage = \"kong-plugin-\" .. plugin_name\nversion = \"0.1.0-1\"\n\
         source = { url = \"git+https://example.invalid/rocky.git\" }\ndependencies = {}\n\
         build = { type = \"builtin\", modules = {\n\
           [\"kong.plugins.\" .. plugin_name .. \".handler\"] = \"src/handler.lua\",\n\
           [\"kong.plugins.\" .. plugin_name .. \".schema\"] = \"src/schema.lua\",\n\
           [\"resty.rocky-util\"] = \"lib/util.lua\" } }\n",
    );
    write(
        &src.join("src/handler.lua"),
        "local H = { PRIORITY = 10, VERSION = \"0.1.0\" }\nfunction H:access() end\nreturn H\n",
    );
    write(&src.join("src/schema.lua"), "return { name = \"rocky\", fields = { { config = { type = \"record\", fields = {} } } } }\n");
    write(&src.join("lib/util.lua"), "return { util = true }\n");
    src
}

/// `luarocks make` + `luarocks pack` of `src` (the rocky tree): the .all.rock.
fn luarocks_pack(dir: &Path, src: &Path) -> PathBuf {
    let tree = dir.join("tree");
    run(Command::new("luarocks")
        .current_dir(src)
        .args(["make", "--deps-mode=none", "--tree"])
        .arg(&tree)
        .arg("kong-plugin-rocky-0.1.0-1.rockspec"));
    run(Command::new("luarocks")
        .current_dir(dir)
        .args(["pack", "--tree"])
        .arg(&tree)
        .arg("kong-plugin-rocky"));
    dir.join("kong-plugin-rocky-0.1.0-1.all.rock")
}

/// `luarocks make` + `luarocks pack` build a real .all.rock; kplug reads it without
/// `unzip`, checks rock_manifest, installs the plugin, and LuaJIT loads it.
#[test]
fn rocks_built_by_luarocks() {
    let t = tempfile::tempdir().unwrap();
    let src = rocky_source(t.path());

    // The rockspec is the map: packed as rocky (not "src"), laid out as luarocks would.
    let s = kplug::node::plugin::locate(&src, None, None).unwrap();
    assert_eq!((s.name.as_str(), s.version.as_str()), ("rocky", "0.1.0"));
    let packed = kplug::node::plugin::pack(&s, &t.path().join("rocky.tar.gz")).unwrap();
    let paths: Vec<&str> = packed.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["handler.lua", "schema.lua"]);

    let rock = luarocks_pack(t.path(), &src);

    let lua = t.path().join("lua");
    let prefix = Prefix::new(&lua);
    let staging = state::staging_dir(&prefix).unwrap();
    let ex = kinds::extract_file(
        &rock,
        staging.path(),
        &Limits::DEFAULT,
        &NameHints::default(),
        std::slice::from_ref(&lua),
    )
    .unwrap();
    let report = ex.rock.clone().unwrap();
    assert_eq!(
        (report.kind.as_str(), report.plugins.as_slice()),
        ("all", &["rocky".to_string()][..])
    );
    assert_eq!(report.extras.len(), 1);
    assert_eq!(
        (
            report.extras[0].module.as_str(),
            report.extras[0].installed_at.is_none()
        ),
        ("resty.rocky-util", true)
    );
    assert!(
        report.notes()[0].contains("NOT installed"),
        "{:?}",
        report.notes()
    );
    let p = &ex.plugins[0];
    assert_eq!(
        (p.name.as_str(), p.version.as_deref()),
        ("rocky", Some("0.1.0"))
    );
    {
        let _lock = state::lock(&prefix).unwrap();
        state::install_dir(&prefix, &p.dir, receipt("rocky", "sha256:1"), None).unwrap();
    }
    let out = run(Command::new("luajit").arg("-e").arg(format!(
        "package.path = '{0}/?.lua;{0}/?/init.lua;' .. package.path\n\
         local h = require('kong.plugins.rocky.handler')\nlocal s = require('kong.plugins.rocky.schema')\n\
         assert(h.VERSION == '0.1.0' and s.name == 'rocky')\nprint('loaded ' .. s.name)",
        lua.display()
    )));
    assert_eq!(out.trim(), "loaded rocky");

    // The same rock through the CLI (install reads rocks now): the note about the module
    // it carries that is not installed, then LuaJIT loads what the CLI installed.
    let lua2 = t.path().join("lua2");
    let out = Command::new(env!("CARGO_BIN_EXE_kplug"))
        .env("HOME", t.path())
        .env("DOCKER_CONFIG", t.path().join(".docker"))
        .env("NO_COLOR", "1")
        .env_remove("KONG_PLUGINS")
        .arg("install")
        .arg(&rock)
        .arg("--insecure-skip-verify")
        .arg("--prefix")
        .arg(&lua2)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("resty.rocky-util") && err.contains("NOT installed"),
        "{err}"
    );
    assert!(lua2.join("kong/plugins/rocky/handler.lua").is_file());

    // A file changed after `luarocks pack`: MD5 mismatch, exit 5. Rewritten with `zip`.
    let altered = t.path().join("altered");
    run(Command::new("unzip")
        .arg("-q")
        .arg(&rock)
        .arg("-d")
        .arg(&altered));
    fs::write(
        altered.join("lua/kong/plugins/rocky/handler.lua"),
        "return { PRIORITY = 1, VERSION = \"6.6.6\" }\n",
    )
    .unwrap();
    let bad = t.path().join("altered.all.rock");
    run(Command::new("zip")
        .current_dir(&altered)
        .arg("-qr")
        .arg(&bad)
        .arg("."));
    let staging = state::staging_dir(&prefix).unwrap();
    let e = kinds::extract_file(
        &bad,
        staging.path(),
        &Limits::DEFAULT,
        &NameHints::default(),
        &[],
    )
    .unwrap_err();
    assert_eq!(kind_of(&e), Kind::Integrity, "{e:#}");
    assert!(
        format!("{e:#}").contains("lua/kong/plugins/rocky/handler.lua has MD5"),
        "{e:#}"
    );

    // A `../` entry: refused by the gate before anything is written.
    let evil = t.path().join("evil");
    write(&evil.join("x/rock_manifest"), "rock_manifest = {}\n");
    write(&t.path().join("escape.lua"), "x");
    let evil_rock = t.path().join("evil.all.rock");
    run(Command::new("zip")
        .current_dir(evil.join("x"))
        .arg("-q")
        .arg(&evil_rock)
        .arg("rock_manifest")
        .arg("../../escape.lua"));
    let staging = state::staging_dir(&prefix).unwrap();
    let e = kinds::extract_file(
        &evil_rock,
        staging.path(),
        &Limits::DEFAULT,
        &NameHints::default(),
        &[],
    )
    .unwrap_err();
    assert_eq!(kind_of(&e), Kind::Unsafe, "{e:#}");
    assert!(format!("{e:#}").contains("`..`"), "{e:#}");

    // A .src.rock of a pure-Lua tree: laid out by its rockspec's build.modules.
    let srcrock = t.path().join("kong-plugin-rocky-0.1.0-1.src.rock");
    run(Command::new("zip")
        .current_dir(t.path())
        .arg("-qr")
        .arg(&srcrock)
        .args([
            "kong-plugin-rocky/kong-plugin-rocky-0.1.0-1.rockspec",
            "kong-plugin-rocky/src",
            "kong-plugin-rocky/lib",
        ]));
    run(Command::new("zip")
        .current_dir(&src)
        .arg("-q")
        .arg(&srcrock)
        .arg("kong-plugin-rocky-0.1.0-1.rockspec"));
    let staging = state::staging_dir(&prefix).unwrap();
    let ex = kinds::extract_file(
        &srcrock,
        staging.path(),
        &Limits::DEFAULT,
        &NameHints::default(),
        &[],
    )
    .unwrap();
    let p = &ex.plugins[0];
    assert_eq!(
        (p.name.as_str(), ex.rock.unwrap().kind.as_str()),
        ("rocky", "src")
    );
    let files: Vec<&str> = p.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(files, ["handler.lua", "schema.lua"]);
}

/// Syntax errors (with file:line) and a schema naming another plugin are refused when
/// packing and when installing; a flat image is named by its schema.
#[test]
fn syntax_and_schema_name_at_pack_and_install() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("kong/plugins/acme");
    write(&dir.join("handler.lua"), "local H = { PRIORITY = 1, VERSION = \"1.0.0\" }\nfunction H:access(conf)\n  if conf.x then\n    return\nend\nreturn H\n");
    write(
        &dir.join("schema.lua"),
        "return { name = \"acme\", fields = {} }\n",
    );
    let e = kplug::node::plugin::locate(t.path(), None, None).unwrap_err();
    let m = format!("{e:#}");
    assert_eq!(kind_of(&e), Kind::Unsafe, "{m}");
    assert!(
        m.contains("acme/handler.lua:7: 'end' expected (to close 'function' at line 2)")
            && m.contains("syntax error"),
        "{m}"
    );

    // The same tree as an archive (as a pushed opaque file would be): refused at install.
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", t.path()).unwrap();
    let tarball = b.into_inner().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let e =
        unpack::extract_plugin(&tarball[..], staging.path(), &Limits::DEFAULT, None).unwrap_err();
    assert!(format!("{e:#}").contains("handler.lua:7:"), "{e:#}");

    write(
        &dir.join("handler.lua"),
        "return { PRIORITY = 1, VERSION = \"1.0.0\" }\n",
    );
    write(
        &dir.join("schema.lua"),
        "return { name = \"other\", fields = {} }\n",
    );
    let m = format!(
        "{:#}",
        kplug::node::plugin::locate(t.path(), None, None).unwrap_err()
    );
    assert!(m.contains("\"other\"") && m.contains("\"acme\""), "{m}");

    // KongPluginInstallation image: flat files, named by the schema, not the repository.
    let mut b = tar::Builder::new(Vec::new());
    for (n, body) in [
        (
            "handler.lua",
            &b"return { PRIORITY = 1, VERSION = \"1.0.0\" }\n"[..],
        ),
        (
            "schema.lua",
            b"return { name = \"flat-one\", fields = {} }\n",
        ),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, n, body).unwrap();
    }
    let flat = b.into_inner().unwrap();
    let staging = tempfile::tempdir().unwrap();
    let hints = NameHints {
        flag: None,
        repo: Some("my-repo".into()),
    };
    let p =
        unpack::extract_plugin_with(&flat[..], staging.path(), &Limits::DEFAULT, &hints).unwrap();
    assert_eq!(p.name, "flat-one");
}

/// Fill the fixture kong.conf's placeholders.
fn fixture_conf(t: &Path, lua: &Path, bin: &Path, yml: &Path) -> PathBuf {
    let text = fs::read_to_string("tests/fixtures/doctor/kong.conf")
        .unwrap()
        .replace("@LUA@", &lua.display().to_string())
        .replace("@BIN@", &bin.display().to_string())
        .replace("@YML@", &yml.display().to_string());
    let p = t.join("kong.conf");
    fs::write(&p, text).unwrap();
    p
}

/// Every start-up failure the fixture node has, DB-less and in DB mode.
#[test]
fn doctor_matrix() {
    let t = tempfile::tempdir().unwrap();
    let lua = t.path().join("lua");
    let bin = t.path().join("bin");
    let pd = |n: &str| lua.join("kong/plugins").join(n);
    let ok_handler = "return { PRIORITY = 1, VERSION = \"1.0.0\" }\n";
    let schema = |n: &str| format!("return {{ name = \"{n}\", fields = {{}} }}\n");
    for n in ["good", "badmig", "broken"] {
        write(&pd(n).join("handler.lua"), ok_handler);
        write(&pd(n).join("schema.lua"), &schema(n));
    }
    write(&pd("noschema").join("handler.lua"), ok_handler);
    write(&pd("badmig").join("migrations/000_base.lua"), "return {}\n");
    write(
        &pd("broken").join("access.lua"),
        "local M = {}\nfunction M.run()\n  return 1 +\nend\nreturn M\n",
    );
    write(&pd("misnamed").join("handler.lua"), ok_handler);
    write(&pd("misnamed").join("schema.lua"), &schema("other"));
    py_server(&bin.join("py-hello"), &python_with_pdk(), "0.1.0");
    let yml = t.path().join("kong.yml");
    fs::copy("tests/fixtures/doctor/kong.yml", &yml).unwrap();
    let conf = KongConf::load(&fixture_conf(t.path(), &lua, &bin, &yml)).unwrap();

    let f = doctor::check_with(&conf, &no_env, &[], &Options::default());
    let e = errors(&f);
    let want = [
        ("noschema", "no configuration schema found for plugin: noschema"),
        ("badmig", "migrations has no init.lua"),
        ("broken", "broken/access.lua:4: unexpected symbol near 'end'"),
        ("misnamed", "schema.lua names the plugin \"other\""),
        ("gone", "gone plugin is enabled but not installed"),
        ("relative", "start command `relative-server` is not an absolute path"),
        ("relative", "query command `relative-server -dump` is not an absolute path"),
        ("not-enabled-on-service", "plugin 'not-enabled-on-service' not enabled; add it to the 'plugins' configuration property"),
        ("not-enabled-on-route", "plugin 'not-enabled-on-route' not enabled; add it to the 'plugins' configuration property (used at services[0].routes[0].plugins[1]"),
        ("not-enabled-on-consumer", "plugin 'not-enabled-on-consumer' not enabled"),
    ];
    for (plugin, text) in want {
        assert!(
            has(&f, plugin, Severity::Error, text),
            "no error {plugin}: {text}\n{e:#?}"
        );
    }
    assert_eq!(e.len(), want.len(), "{e:#?}");
    assert!(has(&f, "good", Severity::Ok, "installed at"));
    assert!(has(
        &f,
        "py-hello",
        Severity::Ok,
        "served by plugin server py-hello"
    ));

    // DB mode (environment wins, as in Kong): Kong's other message.
    let pg = |k: &str| (k == "KONG_DATABASE").then(|| "postgres".to_string());
    let f = doctor::check_with(&conf, &pg, &[], &Options::default());
    assert!(has(
        &f,
        "not-enabled-on-route",
        Severity::Error,
        "not-enabled-on-route plugin is in use but not enabled"
    ));
    assert!(!errors(&f)
        .iter()
        .any(|e| e.contains("configuration property")));

    // JSON, _format_version 1.1; a version Kong refuses.
    let opts = Options {
        declarative: Some("tests/fixtures/doctor/kong-1.1.json".into()),
        ..Options::default()
    };
    let f = doctor::check_with(&conf, &no_env, &[], &opts);
    assert!(has(
        &f,
        "json-only",
        Severity::Error,
        "plugin 'json-only' not enabled"
    ));
    assert!(!has(&f, "good", Severity::Error, "not enabled"));
    let v4 = t.path().join("v4.yml");
    fs::write(&v4, "_format_version: \"4.0\"\n").unwrap();
    let f = doctor::check_with(
        &conf,
        &no_env,
        &[],
        &Options {
            declarative: Some(v4),
            ..Options::default()
        },
    );
    assert!(has(
        &f,
        "",
        Severity::Error,
        "_format_version \"4.0\" is not one Kong accepts"
    ));

    // A query command that fails or lists another plugin.
    exec(&bin.join("py-hello"), "#!/bin/sh\necho '[{\"Name\":\"someone-else\",\"Priority\":1,\"Version\":\"1\",\"Schema\":{},\"Phases\":[]}]'\n");
    let f = doctor::check_with(&conf, &no_env, &[], &Options::default());
    assert!(has(
        &f,
        "someone-else",
        Severity::Warning,
        "which `plugins` does not enable"
    ));
    assert!(has(
        &f,
        "py-hello",
        Severity::Error,
        "py-hello plugin is enabled but not installed"
    ));
    exec(&bin.join("py-hello"), "#!/bin/sh\necho boom >&2\nexit 1\n");
    let f = doctor::check_with(&conf, &no_env, &[], &Options::default());
    assert!(has(
        &f,
        "py-hello",
        Severity::Error,
        "the query failed, so Kong will not start"
    ));

    // kong.conf: an explicit missing file is an error naming it; none found says where it looked.
    let missing = t.path().join("no/such/kong.conf");
    let e = kongconf::locate(Some(&missing), kongconf::DEFAULT_PATHS).unwrap_err();
    assert_eq!(kind_of(&e), Kind::Usage);
    assert!(format!("{e}").contains(&missing.display().to_string()));
    let out = Command::new(env!("CARGO_BIN_EXE_kplug"))
        .env("HOME", t.path())
        .arg("doctor")
        .arg("--kong-conf")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&missing.display().to_string()));
    let nowhere = t.path().join("nowhere.conf").display().to_string();
    let (_, looked) = kongconf::locate(None, &[nowhere.as_str()]).unwrap();
    let f = doctor::no_conf_finding(&looked.unwrap());
    assert!(
        f.message.contains(&nowhere) && f.severity == Severity::Warning,
        "{}",
        f.message
    );
}

/// Issue 13's "done when": each kind (Lua tree, rock, plugin server) goes pack → push →
/// sign → install → enable → doctor ok with one command each, and uninstall takes the
/// server's kong.conf lines out again.
#[test]
fn every_kind_through_the_verbs() {
    use common::fixtures::{hello_example, Env, PASSWORD};
    use common::{run_ok, stdout};
    let env = Env::new();
    let t = env.dir();
    let conf = t.join("kong.conf");
    let original = "# ops\nplugins = bundled\n";
    fs::write(&conf, original).unwrap();
    let (lua, bin, lib) = (t.join("lua"), t.join("bin"), t.join("lib"));
    let target = |n: &str| format!("{}/plugins/{n}:0.1.0", env.reg.host());
    let push = |src: &Path, n: &str, extra: &[&str]| {
        run_ok(
            env.home
                .kplug()
                .env("COSIGN_PASSWORD", PASSWORD)
                .arg("push")
                .arg(src)
                .arg(target(n))
                .args(extra)
                .arg("--sign")
                .arg("--key")
                .arg(&env.key.key),
        );
    };
    let install = |n: &str| -> serde_json::Value {
        let out = run_ok(
            env.home
                .kplug()
                .args(["install", "--json", "--enable"])
                .arg(target(n))
                .arg("--key")
                .arg(&env.key.public)
                .arg("--prefix")
                .arg(&lua)
                .arg("--kong-conf")
                .arg(&conf)
                .arg("--bin-dir")
                .arg(&bin)
                .arg("--lib-dir")
                .arg(&lib),
        );
        serde_json::from_str(&stdout(&out)).unwrap()
    };

    // A Lua tree, a rock from luarocks (checked by `pack`), a kong-pdk plugin server.
    push(&hello_example(), "hello", &[]);
    let rock = luarocks_pack(t, &rocky_source(t));
    let packed = t.join("packed");
    fs::create_dir(&packed).unwrap();
    run_ok(
        env.home
            .kplug()
            .arg("pack")
            .arg(&rock)
            .arg("-o")
            .arg(&packed),
    );
    push(&packed.join(rock.file_name().unwrap()), "rocky", &[]);
    let py = t.join("py-hello");
    py_server(&py, &python_with_pdk(), "0.1.0");
    push(
        &py,
        "py-hello",
        &[
            "--runtime",
            "python",
            "--name",
            "py-hello",
            "--version",
            "0.1.0",
        ],
    );

    assert_eq!(install("hello")["name"], "hello");
    let r = install("rocky");
    assert_eq!(r["name"], "rocky");
    assert!(
        r["notes"][0].as_str().unwrap().contains("resty.rocky-util"),
        "{r}"
    );
    let r = install("py-hello");
    let start = bin.join("py-hello").display().to_string();
    assert_eq!(r["server"]["startCmd"], start.as_str(), "{r}");
    assert_eq!(r["server"]["plugins"][0]["name"], "py-hello", "{r}");
    assert_eq!(r["server"]["plugins"][0]["version"], "0.1.0", "{r}");
    // A re-run changes nothing, unless the server's file was altered since.
    assert_eq!(install("py-hello")["outcome"], "unchanged");
    let script = fs::read_to_string(bin.join("py-hello")).unwrap();
    fs::write(bin.join("py-hello"), format!("{script}# altered\n")).unwrap();
    assert_eq!(install("py-hello")["outcome"], "installed");

    let c = KongConf::load(&conf).unwrap();
    assert_eq!(
        c.plugins(&no_env),
        ["bundled", "hello", "rocky", "py-hello"]
    );
    assert_eq!(c.list("pluginserver_names", &no_env), ["py-hello"]);
    assert_eq!(
        c.get("pluginserver_py_hello_start_cmd"),
        Some(start.clone())
    );
    assert_eq!(
        c.get("pluginserver_py_hello_query_cmd"),
        Some(format!("{start} --dump"))
    );
    let doctor = run_ok(
        env.home
            .kplug()
            .arg("doctor")
            .arg("--prefix")
            .arg(&lua)
            .arg("--kong-conf")
            .arg(&conf),
    );
    let report = stdout(&doctor);
    for n in ["hello", "rocky"] {
        assert!(report.contains(&format!("ok    {n}: ")), "{report}");
    }
    assert!(
        report.contains("served by plugin server py-hello"),
        "{report}"
    );
    // The same digest asked into another --bin-dir is installed there (not "unchanged"),
    // and the copy at the old place goes; then back.
    let bin2 = t.join("bin2");
    for (to, from) in [(&bin2, &bin), (&bin, &bin2)] {
        run_ok(
            env.home
                .kplug()
                .args(["install", "--enable"])
                .arg(target("py-hello"))
                .arg("--key")
                .arg(&env.key.public)
                .arg("--prefix")
                .arg(&lua)
                .arg("--kong-conf")
                .arg(&conf)
                .arg("--bin-dir")
                .arg(to)
                .arg("--lib-dir")
                .arg(&lib),
        );
        assert!(to.join("py-hello").is_file() && !from.join("py-hello").exists());
    }
    let listed = run_ok(
        env.home
            .kplug()
            .args(["list", "--json", "--prefix"])
            .arg(&lua),
    );
    let listed: serde_json::Value = serde_json::from_str(&stdout(&listed)).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");

    for n in ["py-hello", "rocky", "hello"] {
        run_ok(
            env.home
                .kplug()
                .args(["uninstall", "--disable", n, "--prefix"])
                .arg(&lua)
                .arg("--kong-conf")
                .arg(&conf),
        );
    }
    assert!(!bin.join("py-hello").exists());
    assert_eq!(fs::read_to_string(&conf).unwrap(), original);
}

/// One syntax error, caught with file:line by `pack`, by `push` (of a directory and of an
/// archive made by `tar`), and by `doctor` once the tree is on a node.
#[test]
fn syntax_error_at_pack_push_and_doctor() {
    use common::{assert_exit, kplug, stderr, stdout};
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src/kong/plugins/acme");
    write(&src.join("handler.lua"), "local H = { PRIORITY = 1, VERSION = \"1.0.0\" }\nfunction H:access(conf)\n  if conf.x then\n    return\nend\nreturn H\n");
    write(
        &src.join("schema.lua"),
        "return { name = \"acme\", fields = {} }\n",
    );
    let want = "handler.lua:7: 'end' expected (to close 'function' at line 2)";
    let refused = |args: &[&std::ffi::OsStr], code: i32| {
        let (mut cmd, _home) = kplug();
        let out = common::run(cmd.args(args));
        assert_exit(&out, code);
        format!("{}{}", stdout(&out), stderr(&out))
    };
    let (srcdir, tgz) = (t.path().join("src"), t.path().join("acme.tar.gz"));
    let m = refused(
        &[
            "pack".as_ref(),
            srcdir.as_os_str(),
            "-o".as_ref(),
            t.path().as_os_str(),
        ],
        6,
    );
    assert!(m.contains(want), "{m}");
    // Refused before the destination is contacted: nothing listens there.
    let unreachable = format!("{}/acme:1.0.0", common::refused_addr());
    let m = refused(
        &["push".as_ref(), srcdir.as_os_str(), unreachable.as_ref()],
        6,
    );
    assert!(m.contains(want), "{m}");
    run(Command::new("tar")
        .arg("czf")
        .arg(&tgz)
        .arg("-C")
        .arg(&srcdir)
        .arg("kong"));
    let m = refused(&["push".as_ref(), tgz.as_os_str(), unreachable.as_ref()], 6);
    assert!(m.contains(want), "{m}");

    let lua = t.path().join("lua");
    fs::create_dir_all(lua.join("kong/plugins")).unwrap();
    fs::rename(&src, lua.join("kong/plugins/acme")).unwrap();
    let conf = t.path().join("kong.conf");
    fs::write(&conf, "plugins = bundled,acme\n").unwrap();
    let m = refused(
        &[
            "doctor".as_ref(),
            "--prefix".as_ref(),
            lua.as_os_str(),
            "--kong-conf".as_ref(),
            conf.as_os_str(),
        ],
        1,
    );
    assert!(m.contains(want), "{m}");
}

/// Review of the plugin-server path: files kplug did not install (in --lib-dir, at a
/// new --bin-dir) are never replaced, a manifest cannot smuggle lines into kong.conf,
/// a server listing several plugins is accepted (Kong registers them all) and doctor
/// counts every one, and `install --env-file` of a server writes its KONG_* lines.
#[test]
fn server_edges() {
    let t = tempfile::tempdir().unwrap();
    let (lua, bin, lib) = (
        t.path().join("lua"),
        t.path().join("bin"),
        t.path().join("lib"),
    );
    let src = t.path().join("src");
    // Two files: installs as a tree under --lib-dir. It lists `other` before itself.
    exec(&src.join("edge"), "#!/bin/sh\n[ \"$1\" = -dump ] || exit 2\necho '{\"Plugins\":[{\"Name\":\"other\",\"Priority\":1,\"Version\":\"1\",\"Schema\":{},\"Phases\":[]},{\"Name\":\"edge\",\"Priority\":1,\"Version\":\"1\",\"Schema\":{},\"Phases\":[\"access\"]}]}'\n");
    write(&src.join("data.txt"), "x\n");
    let pack = |version: &str, socket: Option<&str>| {
        let m = ServerManifest {
            name: "edge".into(),
            version: Some(version.into()),
            runtime: Runtime::Go,
            entrypoint: "edge".into(),
            query_args: None,
            socket: socket.map(String::from),
        };
        external::pack(
            &src,
            &m,
            &t.path().join(format!("edge-{version}.tar.gz")),
            &Limits::DEFAULT,
        )
    };
    let e = pack("0.1.0", Some("x.sock\nplugins = evil")).unwrap_err();
    assert_eq!(kind_of(&e), Kind::Unsafe, "{e:#}");
    assert!(
        format!("{e:#}").contains(r#"socket "x.sock\nplugins = evil""#),
        "{e:#}"
    );
    let install_cmd = |file: &Path, bin: &Path, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kplug"));
        c.current_dir(t.path())
            .env("HOME", t.path())
            .env("NO_COLOR", "1")
            .env_remove("KONG_PLUGINS")
            .env_remove("KONG_PLUGINSERVER_NAMES")
            .arg("install")
            .arg(file)
            .arg("--insecure-skip-verify")
            .arg("--prefix")
            .arg(&lua)
            .arg("--bin-dir")
            .arg(bin)
            .arg("--lib-dir")
            .arg(&lib)
            .args(extra);
        c
    };
    let kplug =
        |file: &Path, bin: &Path, extra: &[&str]| install_cmd(file, bin, extra).output().unwrap();
    let v1 = pack("0.1.0", None).unwrap().path;
    // `pull` unpacks Lua plugins only; it says what to use for a server.
    let scratch = tempfile::tempdir().unwrap();
    let e = kinds::extract_plugin_file(&v1, scratch.path(), &Limits::DEFAULT, None).unwrap_err();
    assert_eq!(kind_of(&e), Kind::Usage, "{e:#}");
    assert!(format!("{e}").contains("kplug install REF"), "{e}");
    // A directory of the operator's where the tree would go: refused, left as it was.
    write(&lib.join("edge/keep.txt"), "mine\n");
    let out = kplug(&v1, &bin, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("kplug did not install it") && err.contains("--lib-dir"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(lib.join("edge/keep.txt")).unwrap(),
        "mine\n"
    );
    assert!(!bin.join("edge").exists());
    fs::remove_dir_all(lib.join("edge")).unwrap();

    let conf = t.path().join("kong.conf");
    fs::write(&conf, "plugins = bundled,other\n").unwrap();
    let env_file = t.path().join("kong.env");
    let conf_arg = conf.to_str().unwrap();
    let env_arg = env_file.to_str().unwrap();
    let out = kplug(
        &v1,
        &bin,
        &["--enable", "--kong-conf", conf_arg, "--env-file", env_arg],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let env = fs::read_to_string(&env_file).unwrap();
    for line in [
        "KONG_PLUGINS=bundled,edge\n",
        "KONG_PLUGINSERVER_NAMES=edge\n",
        &format!(
            "KONG_PLUGINSERVER_EDGE_START_CMD={}\n",
            bin.join("edge").display()
        ),
        &format!(
            "KONG_PLUGINSERVER_EDGE_QUERY_CMD={} -dump\n",
            bin.join("edge").display()
        ),
        "KONG_PLUGINSERVER_EDGE_SOCKET=/usr/local/kong/edge.socket\n",
    ] {
        assert!(env.contains(line), "{line} in {env}");
    }
    // Both plugins the server lists are served: `other` is not "enabled but not installed".
    let c = KongConf::load(&conf).unwrap();
    let f = doctor::check_with(&c, &no_env, &[], &Options::default());
    assert!(!has(&f, "other", Severity::Error, ""), "{f:?}");

    // KONG_PLUGINSERVER_NAMES set in the environment overrides `pluginserver_names =`
    // as KONG_PLUGINS does `plugins =`: the note gives the line Kong's environment needs.
    let out = install_cmd(&v1, &bin, &["--enable", "--kong-conf", conf_arg])
        .env("KONG_PLUGINSERVER_NAMES", "other")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("KONG_PLUGINSERVER_NAMES is set"), "{err}");
    assert!(
        err.contains("\nexport KONG_PLUGINSERVER_NAMES=other,edge"),
        "{err}"
    );
    assert!(!err.contains("export KONG_PLUGINS="), "{err}");

    // An update to another --bin-dir where a file of the operator's is: refused, kept.
    let bin2 = t.path().join("bin2");
    exec(&bin2.join("edge"), "#!/bin/sh\necho mine\n");
    let out = kplug(&pack("0.2.0", None).unwrap().path, &bin2, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--bin-dir"), "{err}");
    assert_eq!(
        fs::read_to_string(bin2.join("edge")).unwrap(),
        "#!/bin/sh\necho mine\n"
    );

    // An update in place keeps the tree; a kept tree changed since is rolled back only
    // with --force (exit 5 otherwise, nothing changed).
    let out = kplug(&pack("0.2.0", None).unwrap().path, &bin, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kept = Prefix::new(&lua)
        .state_dir()
        .join("backup/edge.server/tree/data.txt");
    fs::write(&kept, "changed\n").unwrap();
    let rollback = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kplug"))
            .env("HOME", t.path())
            .args(["rollback", "edge", "--prefix"])
            .arg(&lua)
            .arg("--kong-conf")
            .arg(&conf)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = rollback(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("data.txt (modified)") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(lib.join("edge/data.txt")).unwrap(),
        "x\n"
    );
    let out = rollback(&["--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(lib.join("edge/data.txt")).unwrap(),
        "changed\n"
    );
    let out = rollback(&[]); // back to 0.2.0, whose kept copy is intact
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(lib.join("edge/data.txt")).unwrap(),
        "x\n"
    );

    // uninstall --disable: kplug's files and kong.conf lines go; a file the operator
    // added to the server's tree stays.
    write(&lib.join("edge/local.conf"), "mine\n");
    let out = Command::new(env!("CARGO_BIN_EXE_kplug"))
        .env("HOME", t.path())
        .env_remove("KONG_PLUGINS")
        .args(["uninstall", "edge", "--disable", "--prefix"])
        .arg(&lua)
        .arg("--kong-conf")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(lib.join("edge/local.conf")).unwrap(),
        "mine\n"
    );
    assert!(!lib.join("edge/edge").exists() && !bin.join("edge").exists());
    let text = fs::read_to_string(&conf).unwrap();
    assert!(
        !text.contains("pluginserver") && !text.contains("edge"),
        "{text}"
    );

    // A relative --bin-dir: Kong gets absolute commands all the same.
    fs::remove_dir_all(lib.join("edge")).unwrap();
    let out = kplug(
        &v1,
        Path::new("rel"),
        &["--enable", "--kong-conf", conf_arg],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = KongConf::load(&conf).unwrap();
    let want = t.path().join("rel/edge").display().to_string();
    assert_eq!(c.get("pluginserver_edge_start_cmd"), Some(want));

    // A --bin-dir with a space: quoted for /bin/sh (Kong runs both commands through it);
    // the query runs and doctor reads the quoted path. The old place is cleared.
    let spaced = t.path().join("my bin");
    let out = kplug(&v1, &spaced, &["--enable", "--kong-conf", conf_arg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!t.path().join("rel/edge").exists());
    let c = KongConf::load(&conf).unwrap();
    let q = format!("'{}' -dump", spaced.join("edge").display());
    assert_eq!(c.get("pluginserver_edge_query_cmd"), Some(q));
    let f = doctor::check_with(&c, &no_env, &[], &Options::default());
    assert!(!has(&f, "edge", Severity::Error, ""), "{f:?}");

    // An update without --bin-dir/--lib-dir (a bootstrap script's plain `install REF`)
    // stays where the server is: the file kong.conf starts is not moved away.
    let out = Command::new(env!("CARGO_BIN_EXE_kplug"))
        .current_dir(t.path())
        .env("HOME", t.path())
        .env_remove("KONG_PLUGINS")
        .arg("install")
        .arg(pack("0.3.0", None).unwrap().path)
        .args(["--insecure-skip-verify", "--prefix"])
        .arg(&lua)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(spaced.join("edge").exists());
    assert!(run(Command::new(spaced.join("edge")).arg("-dump")).contains("edge"));
    let data = fs::read_to_string(lib.join("edge/data.txt")).unwrap();
    assert_eq!(data, "x\n");
}

/// A rock holding two plugins through the CLI: without --name both are installed (two
/// receipts, both enabled with --enable); with --name only that one.
#[test]
fn rock_with_two_plugins_through_the_cli() {
    let t = tempfile::tempdir().unwrap();
    let src = rocky_source(t.path());
    let spec = src.join("kong-plugin-rocky-0.1.0-1.rockspec");
    let text = fs::read_to_string(&spec).unwrap().replace(
        "[\"resty.rocky-util\"]",
        "[\"kong.plugins.pebble.handler\"] = \"pebble/handler.lua\",\n\
         [\"kong.plugins.pebble.schema\"] = \"pebble/schema.lua\",\n[\"resty.rocky-util\"]",
    );
    fs::write(&spec, text).unwrap();
    write(
        &src.join("pebble/handler.lua"),
        "return { PRIORITY = 11, VERSION = \"0.1.0\" }\n",
    );
    write(&src.join("pebble/schema.lua"), "return { name = \"pebble\", fields = { { config = { type = \"record\", fields = {} } } } }\n");
    let rock = luarocks_pack(t.path(), &src);
    let conf = t.path().join("kong.conf");
    fs::write(&conf, "plugins = bundled\n").unwrap();
    let install = |prefix: &Path, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kplug"))
            .env("HOME", t.path())
            .env("NO_COLOR", "1")
            .env_remove("KONG_PLUGINS")
            .arg("install")
            .arg(&rock)
            .arg("--insecure-skip-verify")
            .arg("--prefix")
            .arg(prefix)
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        err
    };
    let both = t.path().join("both");
    install(&both, &["--enable", "--kong-conf", conf.to_str().unwrap()]);
    for n in ["rocky", "pebble"] {
        assert!(
            both.join(format!("kong/plugins/{n}/handler.lua")).is_file(),
            "{n}"
        );
        assert!(
            state::read_receipt(&Prefix::new(&both), n)
                .unwrap()
                .is_some(),
            "{n}"
        );
    }
    let c = KongConf::load(&conf).unwrap();
    let mut enabled = c.plugins(&no_env);
    enabled.sort();
    assert_eq!(enabled, ["bundled", "pebble", "rocky"]);
    // Without a kong.conf, the last KONG_PLUGINS line enables both.
    let err = install(&t.path().join("env"), &["--enable"]);
    let last = err.lines().rfind(|l| l.contains("KONG_PLUGINS=")).unwrap();
    assert!(last.contains("rocky") && last.contains("pebble"), "{err}");

    let one = t.path().join("one");
    install(&one, &["--name", "pebble"]);
    assert!(one.join("kong/plugins/pebble/handler.lua").is_file());
    assert!(!one.join("kong/plugins/rocky").exists());
    let listed = kinds::list(&Prefix::new(&one)).unwrap();
    assert_eq!(listed.len(), 1);

    // From an artifact store, a re-run is "already installed" only while both plugins are:
    // the other one changed is put back.
    let layout = format!("oci:{}/lay/rocky:1", t.path().display());
    let out = Command::new(env!("CARGO_BIN_EXE_kplug"))
        .env("HOME", t.path())
        .args(["push", "--force"])
        .arg(&rock)
        .arg(&layout)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from_store = t.path().join("store");
    let run_install = || {
        Command::new(env!("CARGO_BIN_EXE_kplug"))
            .env("HOME", t.path())
            .env_remove("KONG_PLUGINS")
            .arg("install")
            .arg(&layout)
            .args(["--insecure-skip-verify", "--prefix"])
            .arg(&from_store)
            .output()
            .unwrap()
    };
    assert!(run_install().status.success());
    let pebble = from_store.join("kong/plugins/pebble/handler.lua");
    let original = fs::read_to_string(&pebble).unwrap();
    fs::write(&pebble, "-- changed\n").unwrap();
    let out = run_install();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(&pebble).unwrap(), original);

    // One of the two refused (a directory of the operator's under its name): neither is
    // installed, rather than the first alone.
    let partial = t.path().join("partial");
    write(&partial.join("kong/plugins/rocky/handler.lua"), "-- mine\n");
    let out = Command::new(env!("CARGO_BIN_EXE_kplug"))
        .env("HOME", t.path())
        .env_remove("KONG_PLUGINS")
        .arg("install")
        .arg(&rock)
        .args(["--insecure-skip-verify", "--prefix"])
        .arg(&partial)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!partial.join("kong/plugins/pebble").exists(), "{err}");
    assert!(kinds::list(&Prefix::new(&partial)).unwrap().is_empty());
    assert_eq!(
        fs::read_to_string(partial.join("kong/plugins/rocky/handler.lua")).unwrap(),
        "-- mine\n"
    );
}

/// A go-pdk-shaped server script printing `version`, or failing its query when `version`
/// is "broken".
fn edge_script(version: &str) -> String {
    match version {
        "broken" => "#!/bin/sh\nexit 3\n".to_string(),
        v => format!(
            "#!/bin/sh\n[ \"$1\" = -dump ] || exit 2\necho '{{\"Plugins\":[{{\"Name\":\"edge\",\"Priority\":1,\"Version\":\"{v}\",\"Schema\":{{}},\"Phases\":[\"access\"]}}]}}'\n"
        ),
    }
}

/// Updates and rollbacks of a plugin server keep what they replace: the kept previous
/// version survives a failed update and a repair, a tree comes back with its own
/// entrypoint, a rollback that would leave a version behind elsewhere is refused, and
/// uninstall leaves a link the operator re-pointed.
#[test]
fn server_updates_keep_what_they_replace() {
    let t = tempfile::tempdir().unwrap();
    let prefix = Prefix::new(t.path().join("lua"));
    let layout = |bin: &str| ServerLayout {
        bin_dir: t.path().join(bin),
        lib_dir: t.path().join("lib"),
        kong_prefix: "/usr/local/kong".into(),
    };
    // v<version> as one file, or as a tree whose entrypoint is sub/run.
    let artifact = |version: &str, tree: bool| {
        let src = t.path().join(format!("src-{version}-{tree}"));
        let entrypoint = if tree {
            exec(&src.join("sub/run"), &edge_script(version));
            write(&src.join("data.txt"), version);
            "sub/run"
        } else {
            exec(&src.join("edge"), &edge_script(version));
            "edge"
        };
        let m = ServerManifest {
            name: "edge".into(),
            version: Some(
                if version == "broken" {
                    "9.0.0"
                } else {
                    version
                }
                .into(),
            ),
            runtime: Runtime::Go,
            entrypoint: entrypoint.into(),
            query_args: None,
            socket: None,
        };
        let out = t.path().join(format!("edge-{version}-{tree}.tar.gz"));
        external::pack(&src, &m, &out, &Limits::DEFAULT).unwrap()
    };
    let install = |version: &str, tree: bool, bin: &str| {
        let packed = artifact(version, tree);
        let mut r = receipt("edge", &packed.digest);
        r.version = Some(version.into());
        install_server(&prefix, &packed.path, &layout(bin), r, Runtime::Go)
    };
    let rollback = || {
        let _lock = state::lock(&prefix).unwrap();
        kinds::rollback(&prefix, "edge", false)
    };
    let dump = |bin: &str| run(Command::new(t.path().join(bin).join("edge")).arg("-dump"));
    let kept_version = || {
        let r: Receipt = serde_json::from_slice(
            &fs::read(prefix.state_dir().join("backup/edge.server/receipt.json")).unwrap(),
        )
        .unwrap();
        r.version.unwrap()
    };

    // A tree (entrypoint sub/run), then one file; rollback brings the tree back with
    // bin/edge pointing at its own entrypoint, not at the tree's directory.
    install("1.0.0", true, "bin").unwrap();
    install("2.0.0", false, "bin").unwrap();
    rollback().unwrap();
    assert_eq!(
        fs::read_link(t.path().join("bin/edge")).unwrap(),
        t.path().join("lib/edge/sub/run")
    );
    assert!(dump("bin").contains("\"1.0.0\""));
    rollback().unwrap();
    assert!(dump("bin").contains("\"2.0.0\""));
    assert_eq!(kept_version(), "1.0.0");

    // An update whose query fails puts 2.0.0 back and keeps 1.0.0 as the previous one.
    let e = install("broken", false, "bin").unwrap_err();
    assert!(format!("{e:#}").contains("query command"), "{e:#}");
    assert!(dump("bin").contains("\"2.0.0\""));
    assert_eq!(kept_version(), "1.0.0");

    // A repair of a damaged install (its file deleted) works and keeps 1.0.0.
    fs::remove_file(t.path().join("bin/edge")).unwrap();
    install("2.0.0", false, "bin").unwrap();
    assert!(dump("bin").contains("\"2.0.0\""));
    assert_eq!(kept_version(), "1.0.0");

    // The same version moved to another --bin-dir keeps 1.0.0 as the previous one; a
    // rollback that would leave the current version behind in bin2 is refused.
    install("2.0.0", false, "bin2").unwrap();
    assert!(!t.path().join("bin/edge").exists());
    assert_eq!(kept_version(), "1.0.0");
    let e = rollback().unwrap_err();
    assert_eq!(kind_of(&e), Kind::Usage, "{e:#}");
    assert!(format!("{e:#}").contains("--bin-dir"), "{e:#}");
    assert!(dump("bin2").contains("\"2.0.0\""));
    assert!(!t.path().join("bin/edge").exists());

    // An update over a tree the operator added to says so; the file is in the kept copy.
    install("3.0.0", true, "bin2").unwrap();
    write(&t.path().join("lib/edge/local.conf"), "mine\n");
    let (outcome, _) = install("4.0.0", true, "bin2").unwrap();
    let state::Outcome::Installed {
        previous_differs, ..
    } = outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(previous_differs, ["local.conf (not in the receipt)"]);
    assert!(prefix
        .state_dir()
        .join("backup/edge.server/tree/local.conf")
        .is_file());

    // Uninstall removes kplug's link only while it points into kplug's tree.
    let link = t.path().join("bin2/edge");
    let mine = t.path().join("mybuild");
    exec(&mine, &edge_script("7.0.0"));
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&mine, &link).unwrap();
    let left = {
        let _lock = state::lock(&prefix).unwrap();
        kinds::uninstall(&prefix, "edge").unwrap()
    };
    assert_eq!(fs::read_link(&link).unwrap(), mine, "{left:?}");
}
