//! Installing plugins on a data-plane node: verify, unpack safely, swap atomically,
//! keep receipts, edit kong.conf, and the node-side verbs around it.
//!
//! Every test starts its own `docker-registry` and works in its own temp prefix.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use common::fixtures::*;
use common::*;

impl Env {
    /// The Lua tree plugins go into (not created up front).
    fn prefix(&self) -> PathBuf {
        self.dir().join("lua")
    }

    fn plugin_dir(&self) -> PathBuf {
        self.prefix().join("kong/plugins/hello")
    }

    /// kong.conf path (empty unless a test writes it, see `node_cmd`).
    fn conf(&self) -> PathBuf {
        self.dir().join("kong.conf")
    }

    fn repo(&self) -> String {
        format!("{}/plugins/hello", self.reg.host())
    }

    /// Writes plugin `hello` `version` (marker = version) and pushes it to `REG/plugins/hello:tag`.
    fn push_version(&self, version: &str, tag: &str) -> String {
        let src = self.source(version);
        push(&self.home, &src, &format!("{}:{tag}", self.repo()))
    }

    /// The source tree of plugin `hello` `version`, written once.
    fn source(&self, version: &str) -> PathBuf {
        let dir = self.dir().join(format!("src-{version}"));
        if !dir.exists() {
            write_plugin(&dir, "hello", version, &format!("version {version}"));
        }
        dir
    }

    /// Pushes and signs `version` (tag = version); returns the pinned reference.
    fn push_signed(&self, version: &str) -> String {
        let pinned = self.push_version(version, version);
        sign(&self.home, &self.key, &pinned);
        pinned
    }

    /// `kplug <verb> … --prefix P --kong-conf C` (not run). A --kong-conf given must
    /// exist, so an empty one is written when the test has none (never the machine's).
    fn node_cmd(&self, verb: &str) -> Command {
        if !self.conf().exists() {
            std::fs::write(self.conf(), "").unwrap();
        }
        let mut cmd = self.home.kplug();
        cmd.arg(verb)
            .arg("--prefix")
            .arg(self.prefix())
            .arg("--kong-conf")
            .arg(self.conf());
        cmd
    }

    /// `kplug install REF --key cosign.pub --prefix P --kong-conf C [extra…]` (not run).
    fn install_cmd(&self, reference: &str, extra: &[&str]) -> Command {
        let mut cmd = self.node_cmd("install");
        cmd.arg(reference)
            .arg("--key")
            .arg(&self.key.public)
            .args(extra);
        cmd
    }

    fn install(&self, reference: &str) -> Output {
        run_ok(&mut self.install_cmd(reference, &[]))
    }

    fn receipt(&self) -> Value {
        let p = self.prefix().join("kong/plugins/.kplug/hello.json");
        serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap()
    }

    /// `kplug list --json`.
    fn list(&self) -> Vec<Value> {
        let out = run_ok(self.node_cmd("list").arg("--json"));
        serde_json::from_str::<Value>(&stdout(&out))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// Asserts `hello` `version` is installed, intact per `list`, with the files of its source.
    fn assert_installed(&self, version: &str, digest: &str) {
        let listed = self.list();
        assert_eq!(listed.len(), 1, "{listed:?}");
        let l = &listed[0];
        assert_eq!(
            (
                l["name"].as_str(),
                l["version"].as_str(),
                l["digest"].as_str(),
                l["intact"].as_bool()
            ),
            (Some("hello"), Some(version), Some(digest), Some(true)),
            "{l}"
        );
        let src = self.source(version).join("kong/plugins/hello");
        assert_eq!(tree_files(&self.plugin_dir()), tree_files(&src));
    }

    /// Nothing was written: no kong/plugins/hello, no receipt, no leftover; at most the
    /// empty directories up to kplug's state dir kong/plugins/.kplug.
    fn assert_nothing_installed(&self) {
        assert!(
            !self.plugin_dir().exists(),
            "{} exists",
            self.plugin_dir().display()
        );
        let allowed = ["kong", "kong/plugins", "kong/plugins/.kplug"];
        let mut stack = vec![self.prefix()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd {
                let p = e.unwrap().path();
                let rel = p
                    .strip_prefix(self.prefix())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                assert!(
                    allowed.contains(&rel.as_str()) && p.is_dir() && !p.is_symlink(),
                    "left behind under the prefix: {}",
                    p.display()
                );
                stack.push(p);
            }
        }
    }
}

/// Every non-directory under `root` (relative path, file type description), sorted.
fn walk(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, format!("{:?}", m.file_type())));
            }
        }
    }
    out.sort();
    out
}

/// (relative path, content) of every file under `dir`.
fn tree_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    walk(dir)
        .into_iter()
        .map(|(rel, _)| {
            let c = std::fs::read(dir.join(&rel)).unwrap();
            (rel, c)
        })
        .collect()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

fn sha256_file(p: &Path) -> String {
    sha256_digest(&std::fs::read(p).unwrap())
}

// ---------------------------------------------------------------------------------------
// Happy paths
// ---------------------------------------------------------------------------------------

#[test]
fn install_by_digest_writes_files_and_receipt() {
    let env = Env::new();
    let pinned = push(
        &env.home,
        &hello_example(),
        &format!("{}:0.1.0", env.repo()),
    );
    let digest = digest_of(&pinned);
    sign(&env.home, &env.key, &pinned);

    let out = env.install(&pinned);
    assert_eq!(
        stdout(&out).trim(),
        env.plugin_dir().display().to_string(),
        "install prints the plugin directory"
    );
    let err = stderr(&out);
    assert!(err.contains("Verification for"), "{err}");

    // The files, with normalised modes.
    let src = hello_example().join("kong/plugins/hello");
    assert_eq!(tree_files(&env.plugin_dir()), tree_files(&src));
    for f in ["handler.lua", "schema.lua"] {
        assert_eq!(mode(&env.plugin_dir().join(f)), 0o644, "{f}");
    }
    for d in [
        env.plugin_dir(),
        env.prefix().join("kong/plugins"),
        env.prefix().join("kong"),
    ] {
        assert_eq!(mode(&d), 0o755, "{}", d.display());
    }

    // The receipt.
    let r = env.receipt();
    assert_eq!(r["name"], "hello");
    assert_eq!(r["version"], "0.1.0");
    assert_eq!(r["reference"], pinned);
    assert_eq!(r["digest"], digest);
    assert_eq!(r["signer"], openssl_fingerprint(&env.key.public));
    for k in ["verified_at", "installed_at"] {
        let t = r[k].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(t).unwrap_or_else(|e| panic!("{k} {t}: {e}"));
    }
    let files = r["files"].as_array().unwrap();
    let want: Vec<Value> = ["handler.lua", "schema.lua"]
        .iter()
        .map(|f| {
            let p = src.join(f);
            serde_json::json!({
                "path": f,
                "sha256": sha256_file(&p),
                "size": std::fs::metadata(&p).unwrap().len(),
                "mode": 0o644,
            })
        })
        .collect();
    assert_eq!(files, &want);

    // list agrees.
    let l = env.list();
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["intact"], true);
    assert_eq!(l[0]["digest"], digest);
    assert_eq!(l[0]["signer"], r["signer"]);
}

#[test]
fn install_by_tag_records_the_digest() {
    let env = Env::new();
    let pinned = env.push_signed("1.0.0");
    let digest = digest_of(&pinned);
    let out = run_ok(&mut env.install_cmd(&format!("{}:1.0.0", env.repo()), &["--json"]));
    let j: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(j["outcome"], "installed");
    assert_eq!(j["digest"], digest);
    assert_eq!(j["path"], env.plugin_dir().display().to_string());
    let r = env.receipt();
    assert_eq!(r["digest"], digest);
    assert_eq!(r["reference"], pinned, "the receipt pins the digest");
    assert_eq!(r["version"], "1.0.0");
    env.assert_installed("1.0.0", &digest);
}

// ---------------------------------------------------------------------------------------
// Refusals: nothing is written
// ---------------------------------------------------------------------------------------

#[test]
fn unsigned_artifact_is_refused() {
    let env = Env::new();
    let pinned = env.push_version("1.0.0", "1.0.0");
    let out = run_fail(&mut env.install_cmd(&pinned, &[]), 11);
    assert!(
        stderr(&out).contains("nothing was installed"),
        "{}",
        stderr(&out)
    );
    env.assert_nothing_installed();
    run_fail(
        &mut env.install_cmd(&format!("{}:1.0.0", env.repo()), &[]),
        11,
    );
    env.assert_nothing_installed();
}

#[test]
fn wrong_key_is_refused() {
    let env = Env::new();
    let pinned = env.push_version("1.0.0", "1.0.0");
    let other = KeyPair::generate(&env.home, env.dir(), "other");
    sign(&env.home, &other, &pinned);
    let out = run_fail(&mut env.install_cmd(&pinned, &[]), 12);
    assert!(stdout(&out).trim().is_empty());
    env.assert_nothing_installed();
}

#[test]
fn install_needs_a_key() {
    let env = Env::new();
    let pinned = env.push_signed("1.0.0");
    let out = run_fail(env.node_cmd("install").arg(&pinned), 2);
    assert!(stderr(&out).contains("--key"), "{}", stderr(&out));
    env.assert_nothing_installed();
}

/// The tag moves to an unsigned artifact after v1 was installed from it: installing the
/// tag again is refused and v1 stays.
#[test]
fn retagged_unsigned_version_is_refused_and_v1_kept() {
    let env = Env::new();
    let v1 = env.push_version("1.0.0", "stable");
    sign(&env.home, &env.key, &v1);
    let stable = format!("{}:stable", env.repo());
    env.install(&stable);
    env.assert_installed("1.0.0", &digest_of(&v1));

    let v2 = env.push_version("2.0.0", "stable");
    assert_ne!(v1, v2);
    let out = run_fail(&mut env.install_cmd(&stable, &[]), 11);
    assert!(stderr(&out).contains(&digest_of(&v2)), "{}", stderr(&out));
    env.assert_installed("1.0.0", &digest_of(&v1));
    assert!(
        !env.prefix()
            .join("kong/plugins/.kplug/backup/hello")
            .exists(),
        "nothing was swapped"
    );
}

// ---------------------------------------------------------------------------------------
// Hostile archives: exit 6, nothing installed
// ---------------------------------------------------------------------------------------

/// One tar entry with a raw header (no path checks by the tar crate).
struct Entry {
    name: Vec<u8>,
    kind: tar::EntryType,
    mode: u32,
    link: Option<Vec<u8>>,
    data: Vec<u8>,
}

impl Entry {
    fn file(name: &str, data: &[u8]) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            kind: tar::EntryType::Regular,
            mode: 0o644,
            link: None,
            data: data.to_vec(),
        }
    }
    fn dir(name: &str) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            kind: tar::EntryType::Directory,
            mode: 0o755,
            link: None,
            data: vec![],
        }
    }
    fn special(name: &str, kind: tar::EntryType, link: Option<&str>) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            kind,
            mode: 0o644,
            link: link.map(|l| l.as_bytes().to_vec()),
            data: vec![],
        }
    }
}

fn header(e: &Entry, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        assert!(
            e.name.len() < old.name.len(),
            "name too long for a raw header"
        );
        old.name[..e.name.len()].copy_from_slice(&e.name);
        if let Some(l) = &e.link {
            old.linkname[..l.len()].copy_from_slice(l);
        }
    }
    h.set_entry_type(e.kind);
    h.set_mode(e.mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    if e.kind == tar::EntryType::Char {
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
    }
    h.set_cksum();
    h
}

/// The valid plugin `hello` (directories, handler.lua, schema.lua).
fn plugin_entries() -> Vec<Entry> {
    let tmp = tempfile::tempdir().unwrap();
    let src = write_plugin(tmp.path(), "hello", "6.6.6", "hostile");
    let read = |f: &str| std::fs::read(src.join("kong/plugins/hello").join(f)).unwrap();
    vec![
        Entry::dir("kong/"),
        Entry::dir("kong/plugins/"),
        Entry::dir("kong/plugins/hello/"),
        Entry::file("kong/plugins/hello/handler.lua", &read("handler.lua")),
        Entry::file("kong/plugins/hello/schema.lua", &read("schema.lua")),
    ]
}

/// A tar.gz of `entries` written to `path`.
fn write_targz(path: &Path, entries: &[Entry]) {
    let f = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    for e in entries {
        b.append(&header(e, e.data.len() as u64), e.data.as_slice())
            .unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

/// Pushes the archive at `file` to `REG/plugins/hello:<tag>` (which `push` refuses without
/// --force when the node's default limits refuse it: no node would install it), signs it,
/// installs it with `extra` flags: exit 6, `why` in the message, nothing written.
fn assert_hostile_refused(env: &Env, file: &Path, tag: &str, extra: &[&str], why: &str) {
    let reference = format!("{}:{tag}", env.repo());
    if extra.is_empty() {
        let out = run(env.home.kplug().arg("push").arg(file).arg(&reference));
        assert_eq!(
            out.status.code(),
            Some(6),
            "push published it: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    }
    let out = run_ok(
        env.home
            .kplug()
            .args(["push", "--force"])
            .arg(file)
            .arg(&reference),
    );
    let pinned = stdout(&out).trim().to_string();
    sign(&env.home, &env.key, &pinned);
    let out = run_fail(&mut env.install_cmd(&pinned, extra), 6);
    assert!(
        stderr(&out).contains(why),
        "expected {why:?} in:\n{}",
        stderr(&out)
    );
    env.assert_nothing_installed();
}

/// The plugin entries plus `extra`; refused with `why`.
fn hostile(extra: Vec<Entry>, flags: &[&str], why: &str) -> Env {
    let env = Env::new();
    let mut entries = plugin_entries();
    entries.extend(extra);
    let file = env.dir().join("hostile.tar.gz");
    write_targz(&file, &entries);
    assert_hostile_refused(&env, &file, "hostile", flags, why);
    env
}

#[test]
fn hostile_absolute_path() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("abs.lua");
    hostile(
        vec![Entry::file(target.to_str().unwrap(), b"return 'pwned'\n")],
        &[],
        "absolute paths are not allowed",
    );
    assert!(!target.exists(), "{} was written", target.display());
}

#[test]
fn hostile_dotdot_escape() {
    let env = hostile(
        vec![Entry::file(
            // From the staging dir's raw/ tree, this lands beside the prefix.
            "kong/plugins/hello/../../../../../../../../../../escaped.lua",
            b"return 'pwned'\n",
        )],
        &[],
        "`..` components are not allowed",
    );
    assert!(!env.dir().join("escaped.lua").exists());
}

#[test]
fn hostile_rockspec_module_name() {
    // A rockspec's module names become file names: `/` and `..` in one must not lead out.
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("ESCAPED");
    let spec = format!(
        "package = \"kong-plugin-hello\"\nversion = \"0.1.0-1\"\nbuild = {{ type = \"builtin\", modules = {{\n\
         [\"kong.plugins.hello.handler\"] = \"kong/plugins/hello/handler.lua\",\n\
         [\"kong.plugins.hello.schema\"] = \"kong/plugins/hello/schema.lua\",\n\
         [\"kong.plugins.hello.{}\"] = \"kong/plugins/hello/handler.lua\",\n}} }}\n",
        target.display()
    );
    hostile(
        vec![Entry::file("hello-0.1.0-1.rockspec", spec.as_bytes())],
        &[],
        "is not a Lua module name",
    );
    assert!(
        !outside.path().join("ESCAPED.lua").exists(),
        "written outside"
    );
}

#[test]
fn hostile_rockspec_mapping_one_file_many_times() {
    // A few hundred bytes mapped 400 times: the copies count against --max-bytes as an
    // archive's own files do, and are refused before they fill the disk.
    let mut modules = String::from(
        "[\"kong.plugins.hello.handler\"] = \"kong/plugins/hello/handler.lua\",\n\
         [\"kong.plugins.hello.schema\"] = \"kong/plugins/hello/schema.lua\",\n",
    );
    for i in 0..400 {
        modules.push_str(&format!(
            "[\"kong.plugins.hello.m{i}\"] = \"kong/plugins/hello/handler.lua\",\n"
        ));
    }
    let spec = format!(
        "package = \"kong-plugin-hello\"\nversion = \"0.1.0-1\"\n\
         build = {{ type = \"builtin\", modules = {{\n{modules}}} }}\n"
    );
    hostile(
        vec![Entry::file("hello-0.1.0-1.rockspec", spec.as_bytes())],
        &["--max-bytes", "40000"],
        "maps more than the limits allow",
    );
}

#[test]
fn hostile_symlink() {
    hostile(
        vec![Entry::special(
            "kong/plugins/hello/evil.lua",
            tar::EntryType::Symlink,
            Some("/etc/passwd"),
        )],
        &[],
        "symbolic links are not allowed",
    );
}

#[test]
fn hostile_hardlink() {
    hostile(
        vec![Entry::special(
            "kong/plugins/hello/hard.lua",
            tar::EntryType::Link,
            Some("kong/plugins/hello/handler.lua"),
        )],
        &[],
        "hard links are not allowed",
    );
}

#[test]
fn hostile_char_device() {
    hostile(
        vec![Entry::special(
            "kong/plugins/hello/null",
            tar::EntryType::Char,
            None,
        )],
        &[],
        "character devices are not allowed",
    );
}

#[test]
fn hostile_fifo() {
    hostile(
        vec![Entry::special(
            "kong/plugins/hello/fifo",
            tar::EntryType::Fifo,
            None,
        )],
        &[],
        "FIFOs are not allowed",
    );
}

#[test]
fn hostile_setuid_bit() {
    let mut e = Entry::file("kong/plugins/hello/suid.lua", b"return 1\n");
    e.mode = 0o4755;
    hostile(vec![e], &[], "setuid");
}

#[test]
fn hostile_duplicate_entry() {
    hostile(
        vec![Entry::file(
            "kong/plugins/hello/handler.lua",
            b"return { VERSION = 'evil' }\n",
        )],
        &[],
        "duplicate entry",
    );
}

#[test]
fn hostile_non_utf8_name() {
    let mut e = Entry::file("", b"return 1\n");
    e.name = b"kong/plugins/hello/\xff\xfe.lua".to_vec();
    hostile(vec![e], &[], "valid UTF-8");
}

#[test]
fn hostile_too_many_files() {
    let extra = (0..8)
        .map(|i| Entry::file(&format!("kong/plugins/hello/f{i}.lua"), b"return 1\n"))
        .collect();
    hostile(extra, &["--max-files", "5"], "more than 5 files");
}

#[test]
fn hostile_too_many_bytes() {
    let big = format!("return [[{}]]\n", "x".repeat(2000));
    hostile(
        vec![Entry::file("kong/plugins/hello/big.lua", big.as_bytes())],
        &["--max-bytes", "1000"],
        "over 1000 bytes",
    );
}

#[test]
fn hostile_gzip_bomb() {
    let env = Env::new();
    let file = env.dir().join("bomb.tar.gz");
    {
        let f = std::fs::File::create(&file).unwrap();
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::best());
        let mut b = tar::Builder::new(gz);
        for e in plugin_entries() {
            b.append(&header(&e, e.data.len() as u64), e.data.as_slice())
                .unwrap();
        }
        let bomb = Entry::file("kong/plugins/hello/bomb.lua", b"");
        let size = 50u64 << 20;
        b.append(
            &header(&bomb, size),
            std::io::Read::take(std::io::repeat(0), size),
        )
        .unwrap();
        b.into_inner().unwrap().finish().unwrap().flush().unwrap();
    }
    let compressed = std::fs::metadata(&file).unwrap().len();
    assert!(compressed < 1 << 20, "{compressed} bytes");
    assert_hostile_refused(&env, &file, "bomb", &[], "decompression bomb");
}

// ---------------------------------------------------------------------------------------
// Crashes, repeats, concurrency
// ---------------------------------------------------------------------------------------

/// v1 installed, then the v2 upgrade "crashes" at `at`; the next kplug command on the
/// prefix (`list`, which takes the lock) finds v1 intact.
fn crash_during_upgrade(at: &str) {
    let env = Env::new();
    let v1 = env.push_signed("1.0.0");
    let v2 = env.push_signed("2.0.0");
    env.install(&v1);
    let out = run(env.install_cmd(&v2, &[]).env("KPLUG_TEST_FAIL_AT", at));
    assert!(!out.status.success(), "the simulated crash did not fail");
    assert!(
        stderr(&out).contains(&format!("simulated crash at {at}")),
        "{}",
        stderr(&out)
    );
    env.assert_installed("1.0.0", &digest_of(&v1));
    let state = env.prefix().join("kong/plugins/.kplug");
    assert!(!state.join(".journal").exists(), "journal left after list");
    assert!(
        !state.join(".incoming").exists(),
        "incoming left after list"
    );
    // And the upgrade goes through afterwards.
    env.install(&v2);
    env.assert_installed("2.0.0", &digest_of(&v2));
}

#[test]
fn crash_before_swap_keeps_v1() {
    crash_during_upgrade("before-swap");
}

#[test]
fn crash_mid_swap_keeps_v1() {
    crash_during_upgrade("mid-swap");
}

/// After a mid-swap crash a command that takes the prefix lock puts v1 back (here:
/// installing v1 again finds it in place and does nothing).
#[test]
fn crash_mid_swap_is_recovered_by_the_next_install() {
    let env = Env::new();
    let v1 = env.push_signed("1.0.0");
    let v2 = env.push_signed("2.0.0");
    env.install(&v1);
    let out = run(env
        .install_cmd(&v2, &[])
        .env("KPLUG_TEST_FAIL_AT", "mid-swap"));
    assert!(!out.status.success());
    assert!(
        !env.plugin_dir().exists(),
        "mid-swap: the old tree is moved away, the new one not in place"
    );
    let out = run_ok(&mut env.install_cmd(&v1, &["--json"]));
    let j: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        j["outcome"], "unchanged",
        "v1 was recovered, not reinstalled"
    );
    env.assert_installed("1.0.0", &digest_of(&v1));
    let state = env.prefix().join("kong/plugins/.kplug");
    assert!(!state.join(".journal").exists());
    assert!(!state.join(".incoming").exists());
}

#[test]
fn same_digest_twice_is_a_no_op() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    let pinned = env.push_signed("1.0.0");
    env.install(&pinned);
    let receipt_path = env.prefix().join("kong/plugins/.kplug/hello.json");
    let before = std::fs::read(&receipt_path).unwrap();
    let meta = std::fs::metadata(&receipt_path).unwrap();
    let handler = std::fs::metadata(env.plugin_dir().join("handler.lua")).unwrap();
    let installed_at = env.receipt()["installed_at"].clone();

    let out = env.install(&pinned);
    assert!(
        stderr(&out).contains("already installed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&receipt_path).unwrap(), before);
    assert_eq!(env.receipt()["installed_at"], installed_at);
    let meta2 = std::fs::metadata(&receipt_path).unwrap();
    assert_eq!(
        (meta.ino(), meta.mtime(), meta.mtime_nsec()),
        (meta2.ino(), meta2.mtime(), meta2.mtime_nsec()),
        "the receipt was rewritten"
    );
    let handler2 = std::fs::metadata(env.plugin_dir().join("handler.lua")).unwrap();
    assert_eq!(handler.ino(), handler2.ino(), "the tree was replaced");
    assert!(
        !env.prefix()
            .join("kong/plugins/.kplug/backup/hello")
            .exists(),
        "a no-op must not rotate the backup"
    );
    // By tag as well.
    run_ok(&mut env.install_cmd(&format!("{}:1.0.0", env.repo()), &[]));
    assert_eq!(std::fs::read(&receipt_path).unwrap(), before);
}

/// The same digest over a tree someone edited is not a no-op: the tree is put back.
#[test]
fn reinstall_repairs_a_modified_tree() {
    let env = Env::new();
    let pinned = env.push_signed("1.0.0");
    env.install(&pinned);
    let handler = env.plugin_dir().join("handler.lua");
    std::fs::write(&handler, "return { VERSION = 'edited' }\n").unwrap();
    std::fs::remove_file(env.plugin_dir().join("schema.lua")).unwrap();
    let l = env.list();
    assert_eq!(l[0]["intact"], false);
    assert_eq!(l[0]["modified"], serde_json::json!(["handler.lua"]));
    assert_eq!(l[0]["missing"], serde_json::json!(["schema.lua"]));

    let out = run_ok(&mut env.install_cmd(&pinned, &["--json"]));
    let j: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(j["outcome"], "installed");
    env.assert_installed("1.0.0", &digest_of(&pinned));
}

/// Signatures kept in another repository (`COSIGN_REPOSITORY`) are found there.
#[test]
fn install_with_signatures_in_cosign_repository() {
    let env = Env::new();
    let pinned = env.push_version("1.0.0", "1.0.0");
    let sigs = format!("{}/signatures/hello", env.reg.host());
    run_ok(sign_cmd(&env.home, &env.key, &pinned, &[]).env("COSIGN_REPOSITORY", &sigs));
    run_fail(&mut env.install_cmd(&pinned, &[]), 11);
    env.assert_nothing_installed();
    run_ok(
        env.install_cmd(&pinned, &[])
            .env("COSIGN_REPOSITORY", &sigs),
    );
    env.assert_installed("1.0.0", &digest_of(&pinned));
}

/// A no-op install still does what its flags ask: prints its result (`--json`) and
/// enables the plugin (`--enable`).
#[test]
fn same_digest_again_still_prints_json_and_enables() {
    let env = Env::new();
    let pinned = env.push_signed("1.0.0");
    std::fs::write(env.conf(), "#plugins = bundled\n").unwrap();
    env.install(&pinned);
    assert_eq!(
        std::fs::read_to_string(env.conf()).unwrap(),
        "#plugins = bundled\n"
    );
    let out = run_ok(&mut env.install_cmd(&pinned, &["--enable", "--json"]));
    let conf = std::fs::read_to_string(env.conf()).unwrap();
    assert!(
        conf.lines().any(|l| l == "plugins = bundled,hello"),
        "--enable was ignored because the digest was already installed:\n{conf}"
    );
    let j: Value = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("install --json printed no JSON ({e}): {:?}", stdout(&out)));
    assert_eq!(j["outcome"], "unchanged");
    assert_eq!(j["digest"], digest_of(&pinned));
}

#[test]
fn concurrent_installs_end_consistent() {
    let env = Env::new();
    let v1 = env.push_signed("1.0.0");
    let v2 = env.push_signed("2.0.0");
    // Either may go first; the other is then an upgrade or (allowed) a downgrade.
    let children: Vec<_> = [&v1, &v2]
        .iter()
        .map(|r| {
            env.install_cmd(r, &["--allow-downgrade"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert_exit(&out, 0);
    }
    let r = env.receipt();
    let digest = r["digest"].as_str().unwrap().to_string();
    let version = if digest == digest_of(&v1) {
        "1.0.0"
    } else {
        assert_eq!(digest, digest_of(&v2));
        "2.0.0"
    };
    assert_eq!(r["version"], version);
    env.assert_installed(version, &digest);
    let state = env.prefix().join("kong/plugins/.kplug");
    assert!(!state.join(".journal").exists());
    assert!(!state.join(".incoming").exists());
    let staging: Vec<_> = walk(&state)
        .into_iter()
        .filter(|(p, _)| p.starts_with(".staging-"))
        .collect();
    assert!(staging.is_empty(), "{staging:?}");
}

// ---------------------------------------------------------------------------------------
// kong.conf, uninstall, rollback, doctor
// ---------------------------------------------------------------------------------------

const STOCK_CONF: &str = "\
# -----------------------
# Kong configuration file
# -----------------------
#
# The commented-out settings shown in this file represent the default values.
#

#------------------------------------------------------------------------------
# GENERAL
#------------------------------------------------------------------------------

#prefix = /usr/local/kong/       # Working directory. Equivalent to Nginx's
                                 # prefix path, containing temporary files
                                 # and logs.

#log_level = notice              # Log level of the Nginx server. Logs are
                                 # found at `<prefix>/logs/error.log`.

#plugins = bundled               # Comma-separated list of plugins this node
                                 # should load. By default, only plugins
                                 # bundled in official distributions are
                                 # loaded via the `bundled` keyword.
                                 #
                                 # Loading a plugin does not enable it by
                                 # default, but only instructs Kong to load its
                                 # source code.

#pluginserver_names =            # Comma-separated list of names for pluginserver

#------------------------------------------------------------------------------
# DATASTORE
#------------------------------------------------------------------------------

#database = postgres             # Determines the database (or no database) for
                                 # this node
database = off

#lua_package_path = ./?.lua;./?/init.lua;  # Sets the Lua module search path
";

#[test]
fn enable_adds_the_plugin_to_a_stock_kong_conf() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    std::fs::write(env.conf(), STOCK_CONF).unwrap();
    std::fs::set_permissions(env.conf(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let pinned = env.push_signed("1.0.0");
    run_ok(&mut env.install_cmd(&pinned, &["--enable"]));

    let after = std::fs::read_to_string(env.conf()).unwrap();
    let before: Vec<&str> = STOCK_CONF.lines().collect();
    let lines: Vec<&str> = after.lines().collect();
    assert_eq!(lines.len(), before.len() + 1, "{after}");
    let at = lines
        .iter()
        .position(|l| *l == "plugins = bundled,hello")
        .unwrap_or_else(|| panic!("no `plugins = bundled,hello` line:\n{after}"));
    // Every other line is identical, in order.
    let mut rest = lines.clone();
    rest.remove(at);
    assert_eq!(rest, before);
    assert!(after.ends_with('\n'));
    // Inserted after the commented-out setting and its continuation comments.
    assert!(lines[at - 1].contains("source code."), "{}", lines[at - 1]);
    assert_eq!(mode(&env.conf()), 0o640);

    // Enabling again changes nothing.
    run_ok(&mut env.install_cmd(&pinned, &["--enable"]));
    assert_eq!(std::fs::read_to_string(env.conf()).unwrap(), after);
}

#[test]
fn uninstall_disable_removes_files_and_the_entry() {
    let env = Env::new();
    std::fs::write(env.conf(), STOCK_CONF).unwrap();
    let pinned = env.push_signed("1.0.0");
    run_ok(&mut env.install_cmd(&pinned, &["--enable"]));
    assert!(env.plugin_dir().join("handler.lua").is_file());

    run_ok(env.node_cmd("uninstall").arg("hello").arg("--disable"));
    assert!(!env.plugin_dir().exists(), "the plugin dir is removed");
    assert!(!env.prefix().join("kong/plugins/.kplug/hello.json").exists());
    assert!(env.list().is_empty());
    let conf = std::fs::read_to_string(env.conf()).unwrap();
    let active: Vec<&str> = conf
        .lines()
        .filter(|l| l.trim_start().starts_with("plugins"))
        .collect();
    assert_eq!(active, ["plugins = bundled"], "{conf}");
    // Every other line is still the stock one.
    let rest: Vec<&str> = conf.lines().filter(|l| *l != "plugins = bundled").collect();
    assert_eq!(rest, STOCK_CONF.lines().collect::<Vec<_>>());

    // Not installed any more: uninstall says so.
    run_fail(env.node_cmd("uninstall").arg("hello"), 3);
}

#[test]
fn rollback_restores_the_previous_version() {
    let env = Env::new();
    let v1 = env.push_signed("1.0.0");
    let v2 = env.push_signed("2.0.0");
    // Nothing to roll back to yet.
    run_fail(env.node_cmd("rollback").arg("hello"), 3);
    env.install(&v1);
    run_fail(env.node_cmd("rollback").arg("hello"), 3);
    env.install(&v2);
    env.assert_installed("2.0.0", &digest_of(&v2));

    run_ok(env.node_cmd("rollback").arg("hello"));
    env.assert_installed("1.0.0", &digest_of(&v1));
    assert_eq!(env.receipt()["reference"], v1);
    // Rolling back again returns to v2.
    run_ok(env.node_cmd("rollback").arg("hello"));
    env.assert_installed("2.0.0", &digest_of(&v2));
}

#[test]
fn doctor_finds_an_enabled_plugin_missing_then_passes() {
    let env = Env::new();
    let conf = format!(
        "plugins = bundled,hello\nlua_package_path = {}/?.lua;;\n",
        env.prefix().display()
    );
    std::fs::write(env.conf(), &conf).unwrap();
    let out = run(&mut env.node_cmd("doctor"));
    assert!(!out.status.success(), "doctor passed: {}", stdout(&out));
    assert!(
        stdout(&out).contains("enabled but not installed"),
        "{}",
        stdout(&out)
    );
    let out = run(env.node_cmd("doctor").arg("--json"));
    assert!(!out.status.success());
    let findings: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        findings
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["plugin"] == "hello"
                && f["severity"] == "error"
                && f["message"]
                    .as_str()
                    .unwrap()
                    .contains("enabled but not installed")),
        "{findings}"
    );

    let pinned = env.push_signed("1.0.0");
    env.install(&pinned);
    let out = run_ok(env.node_cmd("doctor").arg("--json"));
    let findings: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let findings = findings.as_array().unwrap();
    assert!(
        findings.iter().all(|f| f["severity"] != "error"),
        "{findings:?}"
    );
    assert!(
        findings.iter().any(|f| f["plugin"] == "hello"
            && f["severity"] == "ok"
            && f["message"]
                .as_str()
                .unwrap()
                .contains("installed by kplug")),
        "{findings:?}"
    );
    assert_eq!(
        std::fs::read_to_string(env.conf()).unwrap(),
        conf,
        "doctor edits nothing"
    );
}

#[test]
fn doctor_warns_about_daos_on_a_dbless_node() {
    let env = Env::new();
    let src = env.source("1.0.0");
    let dir = src.join("kong/plugins/hello");
    std::fs::write(
        dir.join("daos.lua"),
        "return {\n  { name = \"hello_things\", primary_key = { \"id\" }, fields = {} },\n}\n",
    )
    .unwrap();
    std::fs::create_dir(dir.join("migrations")).unwrap();
    std::fs::write(dir.join("migrations/init.lua"), "return { \"000_base\" }\n").unwrap();
    std::fs::write(
        dir.join("migrations/000_base.lua"),
        "return {\n  postgres = { up = [[ CREATE TABLE IF NOT EXISTS hello_things (id uuid PRIMARY KEY); ]] },\n}\n",
    )
    .unwrap();
    let pinned = env.push_signed("1.0.0");
    std::fs::write(
        env.conf(),
        format!(
            "database = off\nplugins = bundled,hello\nlua_package_path = {}/?.lua;;\n",
            env.prefix().display()
        ),
    )
    .unwrap();
    env.install(&pinned);
    assert_eq!(mode(&env.plugin_dir().join("migrations")), 0o755);
    assert_eq!(
        mode(&env.plugin_dir().join("migrations/000_base.lua")),
        0o644
    );

    let out = run_ok(env.node_cmd("doctor").arg("--json"));
    let findings: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(
        findings
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["plugin"] == "hello"
                && f["severity"] == "warning"
                && f["message"].as_str().unwrap().contains("daos.lua")
                && f["message"].as_str().unwrap().contains("database = off")),
        "{findings}"
    );
}

/// LuaJIT, as Kong's loader would, finds the handler module in the installed tree and
/// compiles every installed Lua file.
#[test]
fn luajit_loads_the_installed_tree() {
    let luajit = require_bin("luajit", "luajit");
    let env = Env::new();
    let dir = env.source("1.0.0").join("kong/plugins/hello");
    std::fs::create_dir(dir.join("lib")).unwrap();
    std::fs::write(
        dir.join("lib/util.lua"),
        "local M = {}\nfunction M.greet(n) return 'hi ' .. n end\nreturn M\n",
    )
    .unwrap();
    let pinned = env.push_signed("1.0.0");
    env.install(&pinned);

    let root = env.prefix().display().to_string();
    let lj = |code: &str| run_ok(Command::new(&luajit).arg("-e").arg(code));
    for (module, file) in [
        ("kong.plugins.hello.handler", "handler.lua"),
        ("kong.plugins.hello.schema", "schema.lua"),
        ("kong.plugins.hello.lib.util", "lib/util.lua"),
    ] {
        let out = lj(&format!(
            "print(package.searchpath('{module}', '{root}/?.lua;{root}/?/init.lua'))"
        ));
        assert_eq!(
            stdout(&out).trim(),
            env.plugin_dir().join(file).display().to_string()
        );
    }
    let files = env.receipt()["files"].as_array().unwrap().clone();
    assert_eq!(files.len(), 3);
    for f in files {
        let p = env.plugin_dir().join(f["path"].as_str().unwrap());
        lj(&format!("assert(loadfile('{}'))", p.display()));
    }
    // And the handler runs: its VERSION is the one installed.
    let out = lj(&format!(
        "package.path = '{root}/?.lua;' .. package.path; \
         local h = require('kong.plugins.hello.handler'); print(h.VERSION, h.PRIORITY)"
    ));
    assert_eq!(stdout(&out).trim(), "1.0.0\t1000");
}

// ---------------------------------------------------------------------------------------
// Other sources
// ---------------------------------------------------------------------------------------

#[test]
fn install_from_an_oci_layout() {
    let env = Env::new();
    let layout = env.dir().join("layout");
    let reference = format!("oci:{}:hello:1.0.0", layout.display());
    let pinned = push(&env.home, &env.source("1.0.0"), &reference);
    // Unsigned: refused.
    run_fail(&mut env.install_cmd(&reference, &[]), 11);
    env.assert_nothing_installed();
    sign(&env.home, &env.key, &pinned);
    env.install(&reference);
    env.assert_installed("1.0.0", &digest_of(&pinned));
    let r = env.receipt();
    assert_eq!(r["reference"], pinned);
    assert_eq!(r["signer"], openssl_fingerprint(&env.key.public));
}

/// A plain .tar.gz with a detached signature over its bytes (`cosign sign-blob` form),
/// made here with openssl.
#[test]
fn install_a_plain_targz_with_a_detached_signature() {
    let env = Env::new();
    let d = env.dir();
    let archive = d.join("hello-1.0.0.tar.gz");
    run_ok(
        env.home
            .kplug()
            .arg("pack")
            .arg(env.source("1.0.0"))
            .arg("-o")
            .arg(&archive),
    );
    let sh = |script: &str| run_ok(Command::new("sh").arg("-c").arg(script).current_dir(d));
    sh(
        "openssl ecparam -genkey -name prime256v1 -noout -out k.pem && \
        openssl pkcs8 -topk8 -nocrypt -in k.pem -out k8.pem && \
        openssl pkey -in k8.pem -pubout -out k.pub && \
        openssl dgst -sha256 -sign k8.pem -out sig.der hello-1.0.0.tar.gz && \
        base64 -w0 sig.der > sig.b64 && \
        echo 'not the archive' > other && \
        openssl dgst -sha256 -sign k8.pem -out other.der other && \
        base64 -w0 other.der > other.b64",
    );
    let install = |extra: &[&str]| {
        let mut cmd = env.node_cmd("install");
        cmd.arg(&archive)
            .arg("--key")
            .arg(d.join("k.pub"))
            .args(extra);
        cmd
    };
    // No signature: nothing to verify against.
    run_fail(&mut install(&[]), 11);
    env.assert_nothing_installed();
    // A signature over other bytes.
    run_fail(
        &mut install(&["--signature", d.join("other.b64").to_str().unwrap()]),
        12,
    );
    env.assert_nothing_installed();
    // The kplug key does not verify the openssl signature.
    let mut wrong_key = env.node_cmd("install");
    wrong_key
        .arg(&archive)
        .arg("--key")
        .arg(&env.key.public)
        .arg("--signature")
        .arg(d.join("sig.b64"));
    run_fail(&mut wrong_key, 12);
    env.assert_nothing_installed();

    run_ok(&mut install(&[
        "--signature",
        d.join("sig.b64").to_str().unwrap(),
    ]));
    let r = env.receipt();
    assert_eq!(r["digest"], sha256_file(&archive));
    assert_eq!(r["signer"], openssl_fingerprint(&d.join("k.pub")));
    assert_eq!(
        r["reference"],
        std::fs::canonicalize(&archive)
            .unwrap()
            .display()
            .to_string()
    );
    assert_eq!(r["version"], "1.0.0");
    let src = env.source("1.0.0").join("kong/plugins/hello");
    assert_eq!(tree_files(&env.plugin_dir()), tree_files(&src));
    let l = env.list();
    assert_eq!(l[0]["intact"], true);
}
