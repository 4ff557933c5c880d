//! `vxn-blobs check`: every finding through the real binary (exit code, the line naming the file
//! and what to do, the `--json` code), on blob directories made here: a fake kernel, the demo's
//! initramfs and a rootfs built by mksquashfs from a tree with real owners.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use vxn_blobs::demo::{self, DEMO_INITRAMFS};
use vxn_blobs::kernel::KernelArch;

use crate::fixtures::{c_path, can_run, run_ok};
use crate::util::{have_tool, names, sha256, Arch, Fixture, Run, TestDir, EPOCH};

/// The init of the good tree: what the real vxn-init.sh does first.
const INIT: &[u8] = b"#!/bin/sh\n. /vcontainer-init-common.sh\nvcontainer_log started\n";
const COMMON: &[u8] = b"vcontainer_log() { echo \"vcontainer: $*\"; }\n";

/// A rootfs tree that passes every check; tests break one thing in it.
struct Rootfs {
    root: PathBuf,
}

impl Rootfs {
    fn new(dir: &Path) -> Rootfs {
        let root = dir.join("tree");
        for d in ["bin", "sbin", "etc", "usr/lib/vxn", "dev", "proc"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let rootfs = Rootfs { root };
        rootfs.file("/bin/busybox", b"\x7fELF stand-in", 0o755);
        rootfs.link("/bin/sh", "busybox");
        rootfs.link("/sbin/init", "../bin/busybox");
        rootfs.file("/vxn-init.sh", INIT, 0o755);
        rootfs.file("/vcontainer-init-common.sh", COMMON, 0o755);
        rootfs.file("/etc/hostname", b"vxn\n", 0o644);
        rootfs
    }

    fn host(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn file(&self, path: &str, bytes: &[u8], mode: u32) {
        let host = self.host(path);
        let _ = fs::remove_file(&host);
        fs::write(&host, bytes).unwrap();
        fs::set_permissions(&host, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn remove(&self, path: &str) {
        fs::remove_file(self.host(path)).unwrap();
    }

    fn link(&self, path: &str, target: &str) {
        let _ = fs::remove_file(self.host(path));
        symlink(target, self.host(path)).unwrap();
    }

    /// mksquashfs of the tree (gzip, fragments, real owners) into `out`.
    fn image(&self, out: &Path) {
        run_ok(Command::new("mksquashfs").arg(&self.root).arg(out).args([
            "-comp",
            "gzip",
            "-noappend",
            "-quiet",
            "-no-progress",
        ]));
    }
}

/// A blob directory under test and the directory the binary runs in.
struct Blobs<'d> {
    dir: &'d TestDir,
    path: PathBuf,
}

impl Blobs<'_> {
    /// A vxn/x86_64 directory in `dir` holding a fake bzImage, the demo initramfs and
    /// `rootfs`'s image; no SHA256SUMS (the tests that want one write it).
    fn new<'d>(dir: &'d TestDir, rootfs: &Rootfs) -> Blobs<'d> {
        let path = dir.path().join("vxn/x86_64");
        fs::create_dir_all(&path).unwrap();
        demo::write_fake_kernel(&path.join("bzImage"), KernelArch::X86).unwrap();
        demo::write_initramfs(&path.join("initramfs.cpio.gz"), &DEMO_INITRAMFS, EPOCH).unwrap();
        rootfs.image(&path.join("rootfs.img"));
        Blobs { dir, path }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Runs check twice, as lines and as JSON; returns the lines' run and the JSON findings.
    fn check(&self, extra: &[&str]) -> (Run, Vec<Value>) {
        let path = self.path.display().to_string();
        let mut args = vec!["check", path.as_str()];
        args.extend_from_slice(extra);
        let lines = self.dir.run(&args);
        args.push("--json");
        let json = self.dir.run(&args);
        assert_eq!(json.code, lines.code, "{json:#?}");
        let report: Value = serde_json::from_str(&json.stdout).expect("--json prints JSON");
        assert_eq!(report["ok"], Value::Bool(lines.code == Some(0)), "{report}");
        let findings = report["findings"].as_array().unwrap().clone();
        assert_eq!(
            lines.stdout.lines().count(),
            findings.len() + 1,
            "one line per finding and a summary: {lines:#?}"
        );
        (lines, findings)
    }

    /// Asserts that check passes; returns its summary line.
    #[track_caller]
    fn passes(&self, extra: &[&str]) -> String {
        self.check(extra).0.ok().stdout.trim().to_string()
    }

    /// [`Blobs::refuses_with`] without extra options.
    #[track_caller]
    fn refuses(&self, code: &str, file: &str, words: &[&str]) -> String {
        self.refuses_with(&[], code, file, words)
    }

    /// Asserts that check refuses the directory with exactly the finding `code`, whose line
    /// names `file` (the directory itself when empty) and contains each of `words`; returns
    /// the line.
    #[track_caller]
    fn refuses_with(&self, extra: &[&str], code: &str, file: &str, words: &[&str]) -> String {
        let (run, findings) = self.check(extra);
        let codes: Vec<&str> = findings
            .iter()
            .map(|f| f["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, [code], "{run:#?}");
        let error = run.error_line();
        let expected = "would not boot as it is: check found 1 problem, listed above";
        assert!(error.contains(expected), "{error}");
        let line = run.stdout.lines().next().unwrap().to_string();
        let file = if file.is_empty() {
            self.path.clone()
        } else {
            self.file(file)
        };
        let file = file.display().to_string();
        assert!(line.contains(&file), "the line names {file}: {line}");
        assert_eq!(findings[0]["file"].as_str(), Some(file.as_str()));
        assert_eq!(findings[0]["message"].as_str(), Some(line.as_str()));
        for word in words {
            assert!(line.contains(word), "{word:?} missing from: {line}");
        }
        let summary = run.stdout.lines().last().unwrap();
        let expected = "1 problem(s) that would stop or change the boot";
        assert!(summary.contains(expected), "{summary}");
        line
    }
}

/// A fresh directory and the good tree in it, when the test can run (root, mksquashfs).
fn ready(test: &str) -> Option<(TestDir, Rootfs)> {
    can_run(test, &["mksquashfs"]).then(|| {
        let dir = TestDir::new();
        let rootfs = Rootfs::new(dir.path());
        (dir, rootfs)
    })
}

#[test]
fn a_good_set_passes_and_says_what_was_checked() {
    let Some((dir, rootfs)) = ready("a_good_set_passes_and_says_what_was_checked") else {
        return;
    };
    // A symlinked directory on the way to a sourced file resolves inside the image.
    rootfs.file("/usr/lib/vxn/extra.sh", b"true\n", 0o644);
    rootfs.link("/lib", "/usr/lib");
    rootfs.file(
        "/vcontainer-init-common.sh",
        b". /lib/vxn/extra.sh\n",
        0o755,
    );
    let summary = Blobs::new(&dir, &rootfs).passes(&[]);
    for word in [
        "nothing found that would stop the boot",
        "bzImage: a bzImage for x86_64",
        "initramfs.cpio.gz: one gzip stream, a newc cpio of 3 entries with /init",
        "rootfs.img: squashfs (gzip",
        "/vxn-init.sh runs /bin/sh (/bin/busybox), sources /vcontainer-init-common.sh, sources /lib/vxn/extra.sh",
    ] {
        assert!(summary.contains(word), "{word:?} missing from: {summary}");
    }
}

/// A way to break the good tree, the finding it must give and words of its line.
type Breakage<'a> = (&'a str, &'a dyn Fn(&Rootfs), &'a str, &'a [&'a str]);

#[test]
fn the_init_script_findings() {
    if ready("the_init_script_findings").is_none() {
        return;
    }
    let cases: &[Breakage] = &[
        ("missing", &|r| r.remove("/vxn-init.sh"), "init-missing",
            &["/vxn-init.sh is not there (/vxn-init.sh does not exist)", "boots /init or /sbin/init instead", "inject it with mode 0755"]),
        ("mode 0644", &|r| r.file("/vxn-init.sh", INIT, 0o644), "init-not-executable",
            &["/vxn-init.sh has mode 0644, not executable", "[ -x ] test fails", "inject it with mode 0755"]),
        ("a symlink", &|r| { r.file("/usr/lib/vxn/init.sh", INIT, 0o755); r.link("/vxn-init.sh", "/usr/lib/vxn/init.sh") }, "init-not-file",
            &["/vxn-init.sh is a symlink to /usr/lib/vxn/init.sh, not a regular file", "install the script itself"]),
        ("no #!", &|r| r.file("/vxn-init.sh", b"echo hi\n", 0o755), "init-format",
            &["/vxn-init.sh starts with neither #! nor an ELF header", "ENOEXEC", "#!/bin/sh"]),
        ("an empty #!", &|r| r.file("/vxn-init.sh", b"#!\necho hi\n", 0o755), "init-format",
            &["names no interpreter"]),
        ("CRLF", &|r| r.file("/vxn-init.sh", b"#!/bin/sh\r\n. /vcontainer-init-common.sh\r\n", 0o755), "shebang-cr",
            &["carriage return in its #! line", "\"/bin/sh\\r\"", "dos2unix"]),
        ("no bash", &|r| r.file("/vxn-init.sh", b"#!/bin/bash\n", 0o755), "interpreter-missing",
            &["names the interpreter /bin/bash, which is not in the image (/bin/bash does not exist)", "ENOENT", "#!/bin/sh"]),
        ("a dangling interpreter", &|r| r.link("/bin/sh", "/usr/bin/dash"), "interpreter-missing",
            &["/bin/sh, which is not in the image (/usr/bin does not exist)"]),
        ("interpreter 0644", &|r| r.file("/vxn-init.sh", b"#!/etc/hostname\n", 0o755), "interpreter-not-executable",
            &["/etc/hostname, which is a file of mode 0644, not executable,", "EACCES"]),
        ("interpreter is a directory", &|r| r.file("/vxn-init.sh", b"#!/etc\n", 0o755), "interpreter-not-executable",
            &["/etc, which is a directory in the image"]),
        ("a #! loop", &|r| r.file("/bin/busybox", b"#!/bin/sh\n", 0o755), "interpreter-format",
            &["/vxn-init.sh's #! interpreters loop (/vxn-init.sh -> /bin/sh (/bin/busybox) -> /bin/sh (/bin/busybox))", "ELOOP"]),
        ("a text interpreter", &|r| r.file("/bin/busybox", b"plain text\n", 0o755), "interpreter-format",
            &["/bin/sh (/bin/busybox), the #! interpreter of /vxn-init.sh, starts with neither #! nor an ELF header"]),
        ("a symlink loop", &|r| { r.link("/bin/sh", "/bin/ash"); r.link("/bin/ash", "sh") }, "interpreter-missing",
            &["follows more than 40 symlinks"]),
        ("owned by 1000", &|r| std::os::unix::fs::lchown(r.host("/vxn-init.sh"), Some(1000), Some(1000)).unwrap(), "init-owner",
            &["/vxn-init.sh is owned by 1000:1000, not 0:0", "installs files as 0:0"]),
        ("common missing", &|r| r.remove("/vcontainer-init-common.sh"), "source-missing",
            &["/vxn-init.sh sources /vcontainer-init-common.sh, which is not in the image", "sh stops at that line", "inject it too"]),
        ("a source of a source missing", &|r| r.file("/vcontainer-init-common.sh", b"if true; then . '/etc/vxn.conf'; fi\n", 0o755), "source-missing",
            &["/vcontainer-init-common.sh sources /etc/vxn.conf, which is not in the image"]),
        ("source is a directory", &|r| r.file("/vxn-init.sh", b"#!/bin/sh\nsource /etc\n", 0o755), "source-missing",
            &["/vxn-init.sh sources /etc, which is a directory in the image"]),
        ("dash and ${var/pattern/string}", &|r| { dash(r); r.file("/vxn-init.sh", BASHISM, 0o755) }, "shell-unsupported",
            &["/vxn-init.sh runs under /bin/sh (/usr/bin/dash), which is dash, and uses ${digest/://} (pattern substitution) at lines 3, 4, ${x:1} (substring expansion) at line 4; dash has no such expansion", "\"Bad substitution\"", "make /bin/sh busybox or bash"]),
        ("dash and a sourced ${!name}", &|r| { dash(r); r.file("/vcontainer-init-common.sh", b"v=${!name}\n", 0o755) }, "shell-unsupported",
            &["/vcontainer-init-common.sh, which /vxn-init.sh sources, runs under /bin/sh (/usr/bin/dash), which is dash, and uses ${!name} (indirect expansion) at line 1"]),
    ];
    for (case, breaks, code, words) in cases {
        eprintln!("case: {case}");
        let (dir, rootfs) = ready(case).unwrap();
        breaks(&rootfs);
        Blobs::new(&dir, &rootfs).refuses(code, "rootfs.img", words);
    }
}

/// An init that takes a digest apart as meta-virtualization's vxn-init.sh does.
const BASHISM: &[u8] = b"#!/bin/sh\n. /vcontainer-init-common.sh\nblob=\"$dir/${digest/://}\"\n\
    [ -f \"$dir/${digest/://}\" ] || echo ${x:1}\n";

/// Makes /bin/sh dash, as Debian-based images have it.
fn dash(rootfs: &Rootfs) {
    fs::create_dir_all(rootfs.host("/usr/bin")).unwrap();
    rootfs.file("/usr/bin/dash", b"\x7fELF stand-in", 0o755);
    rootfs.link("/bin/sh", "/usr/bin/dash");
}

#[test]
fn only_a_shell_that_lacks_an_expansion_makes_it_a_finding() {
    let Some((dir, rootfs)) = ready("only_a_shell_that_lacks_an_expansion_makes_it_a_finding")
    else {
        return;
    };
    // busybox (the image's /bin/sh here) and bash run ${var/pattern/string}.
    rootfs.file("/vxn-init.sh", BASHISM, 0o755);
    Blobs::new(&dir, &rootfs).passes(&[]);
    rootfs.file("/bin/bash", b"\x7fELF stand-in", 0o755);
    rootfs.link("/bin/sh", "bash");
    Blobs::new(&dir, &rootfs).passes(&[]);
    // dash runs POSIX expansions, quoted text and here-documents with quoted delimiters.
    dash(&rootfs);
    rootfs.file(
        "/vxn-init.sh",
        b"#!/bin/sh\n. /vcontainer-init-common.sh\nblob=\"$dir/${digest%%:*}/${digest#*:}\" # ${not/this}\n\
        echo '${nor/this}' ${x:-default} ${#x}\n: <<'OFF'\n${x/a/b}\nOFF\n",
        0o755,
    );
    let summary = Blobs::new(&dir, &rootfs).passes(&[]);
    assert!(
        summary.contains("/vxn-init.sh runs /bin/sh (/usr/bin/dash)"),
        "{summary}"
    );
}

#[test]
fn the_preinit_needs_an_init_of_its_own() {
    let Some((dir, rootfs)) = ready("the_preinit_needs_an_init_of_its_own") else {
        return;
    };
    rootfs.remove("/sbin/init");
    let blobs = Blobs::new(&dir, &rootfs);
    let words = [
        "has no executable /init or /sbin/init",
        "No init found on rootfs",
    ];
    blobs.refuses("preinit-init", "rootfs.img", &words);
    // An executable /init is enough.
    rootfs.file("/init", b"#!/bin/sh\n", 0o755);
    rootfs.image(&blobs.file("rootfs.img"));
    blobs.passes(&[]);
}

#[test]
fn other_inits_can_be_named() {
    let Some((dir, rootfs)) = ready("other_inits_can_be_named") else {
        return;
    };
    rootfs.file("/vdkr-init.sh", b"#!/bin/bash\n", 0o755);
    let blobs = Blobs::new(&dir, &rootfs);
    blobs.passes(&[]);
    let both = ["--init", "/vxn-init.sh", "--init", "/vdkr-init.sh"];
    let words = ["/vdkr-init.sh names the interpreter /bin/bash"];
    blobs.refuses_with(&both, "interpreter-missing", "rootfs.img", &words);
    let path = blobs.path.display().to_string();
    let run = dir.run(&["check", &path, "--init", "vxn-init.sh"]);
    assert_eq!(
        run.code,
        Some(2),
        "a relative init is a usage error: {run:#?}"
    );
    assert!(
        run.stderr.contains("not an absolute path inside the image"),
        "{run:#?}"
    );
}

#[test]
fn the_kernel_and_initramfs_findings() {
    let Some((dir, rootfs)) = ready("the_kernel_and_initramfs_findings") else {
        return;
    };
    let blobs = Blobs::new(&dir, &rootfs);
    demo::write_fake_kernel(&blobs.file("bzImage"), KernelArch::Arm64).unwrap();
    let words = ["is not a kernel image for x86_64 (bzImage): expected \"HdrS\" at offset 0x202"];
    blobs.refuses("kernel-format", "bzImage", &words);
    demo::write_fake_kernel(&blobs.file("bzImage"), KernelArch::X86).unwrap();

    // The demo initramfs is /dev, /dev/console and /init, in that order.
    let initramfs = blobs.file("initramfs.cpio.gz");
    let with_init = |mode: u32, count: usize| {
        let mut entries = DEMO_INITRAMFS;
        entries[2].mode = mode;
        demo::write_initramfs(&initramfs, &entries[..count], EPOCH).unwrap();
    };
    with_init(0o100644, 3);
    let words = [
        "has an /init of mode 0644, not executable",
        "rebuild the tiny initramfs",
    ];
    blobs.refuses("initramfs-init", "initramfs.cpio.gz", &words);
    with_init(0o040755, 3);
    blobs.refuses(
        "initramfs-init",
        "initramfs.cpio.gz",
        &["not a regular file"],
    );
    with_init(0o100755, 2);
    blobs.refuses("initramfs-init", "initramfs.cpio.gz", &["has no /init"]);
    fs::write(&initramfs, b"070701 not gzip").unwrap();
    blobs.refuses(
        "initramfs-format",
        "initramfs.cpio.gz",
        &["is not gzip-compressed"],
    );
    with_init(0o100755, 3);
    blobs.passes(&[]);

    let rootfs_img = blobs.file("rootfs.img");
    let bytes = fs::read(&rootfs_img).unwrap();
    // bytes_used, at 40 in the superblock: the image proper, before mksquashfs's padding.
    let used = u64::from_le_bytes(bytes[40..48].try_into().unwrap()) as usize;
    fs::write(&rootfs_img, &bytes[..used / 2]).unwrap();
    blobs.refuses("rootfs-format", "rootfs.img", &["is corrupt or truncated"]);
    fs::write(&rootfs_img, b"not squashfs").unwrap();
    blobs.refuses("rootfs-format", "rootfs.img", &["is not a squashfs image"]);
}

#[test]
fn missing_files_and_the_architecture() {
    let Some((dir, rootfs)) = ready("missing_files_and_the_architecture") else {
        return;
    };
    let blobs = Blobs::new(&dir, &rootfs);
    for name in ["bzImage", "initramfs.cpio.gz", "rootfs.img"] {
        let kept = dir.path().join("kept");
        fs::rename(blobs.file(name), &kept).unwrap();
        blobs.refuses(
            "missing-file",
            name,
            &["is missing", "deploy a complete set"],
        );
        // A fifo in its place is not a file, and must not block the check.
        // SAFETY: a valid path and mode.
        assert_eq!(
            unsafe { libc::mkfifo(c_path(&blobs.file(name)).as_ptr(), 0o644) },
            0
        );
        blobs.refuses("missing-file", name, &["is not a regular file"]);
        fs::remove_file(blobs.file(name)).unwrap();
        fs::rename(&kept, blobs.file(name)).unwrap();
    }
    // The architecture comes from the directory's name, or --arch.
    let renamed = Blobs {
        dir: &dir,
        path: dir.path().join("vxn/blobs"),
    };
    fs::rename(&blobs.path, &renamed.path).unwrap();
    let words = ["which says no architecture", "pass --arch"];
    let line = renamed.refuses("unknown-arch", "", &words);
    let start = format!("{} is named \"blobs\"", renamed.path.display());
    assert!(line.starts_with(&start), "{line}");
    renamed.passes(&["--arch", "x86_64"]);
    renamed.refuses_with(
        &["--arch", "aarch64"],
        "missing-file",
        "Image",
        &["is missing"],
    );
    let path = renamed.path.display().to_string();
    let run = dir.run(&["check", &path, "--arch", "riscv64"]);
    assert_eq!(run.code, Some(2), "{run:#?}");
    // No directory at all is an error, not a report.
    let run = dir.run(&["check", "no-such-dir"]);
    let expected = "no-such-dir does not exist; give a vxn/<arch> directory";
    assert!(run.error_line().contains(expected), "{run:#?}");
    assert_eq!(run.stdout, "");
}

#[test]
fn sha256sums_when_present_must_hold() {
    let Some((dir, rootfs)) = ready("sha256sums_when_present_must_hold") else {
        return;
    };
    let blobs = Blobs::new(&dir, &rootfs);
    let zeros = "0".repeat(64);
    let listing = |names: &[&str], extra: &str| {
        let mut text: String = names
            .iter()
            .map(|n| format!("{}  {n}\n", sha256(&blobs.file(n))))
            .collect();
        text.push_str(extra);
        fs::write(blobs.file("SHA256SUMS"), text).unwrap();
    };
    let all = ["bzImage", "initramfs.cpio.gz", "rootfs.img"];
    listing(&all, "");
    assert!(blobs.passes(&[]).contains("SHA256SUMS: 3 files match"));
    if have_tool("sha256sum") {
        // sha256sum accepts the same file.
        run_ok(
            Command::new("sha256sum")
                .args(["-c", "--strict", "SHA256SUMS"])
                .current_dir(&blobs.path),
        );
    }

    fs::write(blobs.file("README"), b"edited\n").unwrap();
    listing(&all, &format!("{zeros}  README\n"));
    blobs.refuses(
        "sums-mismatch",
        "README",
        &["does not match SHA256SUMS", "deploy again"],
    );
    listing(&all, &format!("{zeros}  gone\n"));
    blobs.refuses(
        "sums-mismatch",
        "gone",
        &["is listed in SHA256SUMS but is missing"],
    );
    listing(&all[..2], "");
    blobs.refuses("sums-invalid", "SHA256SUMS", &["does not list rootfs.img"]);
    listing(&all, "not a line\n");
    let words = ["line 4 is not \"<sha256>  <name>\""];
    blobs.refuses("sums-invalid", "SHA256SUMS", &words);
    listing(&all, &format!("{zeros}  ../x86_64/rootfs.img\n"));
    let words = ["names \"../x86_64/rootfs.img\", which is not a file of this directory"];
    blobs.refuses("sums-invalid", "SHA256SUMS", &words);
}

#[test]
fn every_problem_is_listed_not_just_the_first() {
    let Some((dir, rootfs)) = ready("every_problem_is_listed_not_just_the_first") else {
        return;
    };
    rootfs.file("/vxn-init.sh", b"#!/bin/bash\r\n. /missing.sh\n", 0o644);
    let blobs = Blobs::new(&dir, &rootfs);
    fs::remove_file(blobs.file("bzImage")).unwrap();
    let (run, findings) = blobs.check(&[]);
    let codes: Vec<&str> = findings
        .iter()
        .map(|f| f["code"].as_str().unwrap())
        .collect();
    let expected = [
        "missing-file",
        "init-not-executable",
        "shebang-cr",
        "interpreter-missing",
        "source-missing",
    ];
    assert_eq!(codes, expected, "{run:#?}");
    assert!(
        run.error_line().contains("check found 5 problems"),
        "{run:#?}"
    );
    assert_eq!(findings[0]["path"], Value::Null);
    assert_eq!(findings[4]["path"].as_str(), Some("/missing.sh"));
}

#[test]
fn deploy_checks_the_set_before_installing_it() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    let deployed = fx.deployed();
    let spec = fx.spec_arg();
    let deploy = |dir: &TestDir| dir.run(&["deploy", "--spec", &spec]);

    // A broken first deploy with "check": "error" leaves deploy_dir as it was.
    fx.spec["inject"][0]["mode"] = json!("0644");
    fx.set("check", json!("error"));
    fx.compile(&dir);
    let line = deploy(&dir).error_line();
    let finding = format!(
        "{}: /vxn-init.sh has mode 0644, not executable",
        deployed.join("rootfs.img").display()
    );
    for words in [
        format!("refusing to deploy into {}, because the set would not boot: (1) {finding}", deployed.display()),
        format!("Nothing was installed; fix the inputs and compile again, or set \"check\": \"warn\" in {spec} to install anyway"),
    ] {
        assert!(line.contains(&words), "{words:?} missing from: {line}");
    }
    assert_eq!(names(&dir.path().join("deploy")), Vec::<String>::new());

    // A good set installs and says it was checked.
    fx.spec["inject"][0]["mode"] = json!("0755");
    fx.write_spec();
    fx.compile(&dir);
    let run = deploy(&dir).ok();
    assert!(
        run.stdout
            .contains("  check: nothing found that would stop the boot"),
        "{run:#?}"
    );
    assert!(!run.stderr.contains("warning"), "{run:#?}");
    let good = sha256(&deployed.join("rootfs.img"));

    // The broken set again: refused, and the good one stays in place.
    fx.spec["inject"][0]["mode"] = json!("0644");
    fx.write_spec();
    fx.compile(&dir);
    assert!(deploy(&dir).error_line().contains(&finding));
    assert_eq!(sha256(&deployed.join("rootfs.img")), good);
    assert!(
        !names(&deployed).iter().any(|n| n.starts_with('.')),
        "{:?}",
        names(&deployed)
    );

    // "warn" (the default) installs it with a warning per finding; the knob is not part of the
    // compile, so changing it needs no recompile.
    fx.spec.as_object_mut().unwrap().remove("check");
    fx.write_spec();
    let run = deploy(&dir).ok();
    assert!(
        run.stderr
            .contains(&format!("vxn-blobs: warning: check: {finding}")),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains(&format!(
            "\"check\": \"error\" in {spec} refuses such a set"
        )),
        "{run:#?}"
    );
    assert!(
        run.stdout
            .contains("  check: 1 problem(s) that would stop or change the boot"),
        "{run:#?}"
    );
    // `vxn-blobs check` of what was installed says the same.
    let installed = Blobs {
        dir: &dir,
        path: deployed.clone(),
    };
    installed.refuses("init-not-executable", "rootfs.img", &[&finding]);

    // "off": no check at all.
    fx.set("check", json!("off"));
    let run = deploy(&dir).ok();
    assert!(
        !run.stdout.contains("check") && !run.stderr.contains("check:"),
        "{run:#?}"
    );
}

/// On a usrmerged rootfs (/bin -> usr/bin, /sbin -> usr/sbin) without an init of its own, a
/// spec that injects /sbin/init gives a set the boot check passes: check reads /sbin/init, its
/// `#!/bin/sh` and the scripts through the links where inject put them. Without that injection
/// the same set is refused, which shows the check looked.
#[test]
fn an_init_injected_below_a_usrmerged_sbin_is_the_one_check_reads() {
    let Some((dir, _)) = ready("an_init_injected_below_a_usrmerged_sbin_is_the_one_check_reads")
    else {
        return;
    };
    let tree = Rootfs {
        root: dir.path().join("usrmerged"),
    };
    for d in ["usr/bin", "usr/sbin", "etc", "dev", "proc"] {
        fs::create_dir_all(tree.host(d)).unwrap();
    }
    tree.link("/bin", "usr/bin");
    tree.link("/sbin", "usr/sbin");
    tree.file("/usr/bin/busybox", b"\x7fELF stand-in", 0o755);
    tree.link("/usr/bin/sh", "busybox");
    tree.file("/etc/hostname", b"vxn\n", 0o644);
    let mut fx = Fixture::new(&dir.path().join("set"), Arch::X86_64);
    tree.image(&fx.input("rootfs"));
    fs::write(fx.root.join("inputs/init"), INIT).unwrap();
    fx.spec["inject"]
        .as_array_mut()
        .unwrap()
        .push(json!({"source": "inputs/init", "dest": "/sbin/init", "mode": "0755"}));
    fx.set("check", json!("error"));
    fx.compile(&dir);
    fx.deploy(&dir);
    let rootfs = fx.deployed().join("rootfs.img");
    let listing = run_ok(Command::new("unsquashfs").args(["-lln"]).arg(&rootfs)).stdout;
    let listing = String::from_utf8_lossy(&listing);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x 0/0") && l.ends_with("squashfs-root/usr/sbin/init")),
        "{listing}"
    );
    let deployed = Blobs {
        dir: &dir,
        path: fx.deployed(),
    };
    let summary = deployed.passes(&["--init", "/sbin/init"]);
    assert!(
        summary.contains("/sbin/init runs /bin/sh (/usr/bin/busybox)"),
        "{summary}"
    );

    fx.spec["inject"].as_array_mut().unwrap().pop();
    fx.write_spec();
    fx.compile(&dir);
    let line = dir.run(&["deploy", "--spec", &fx.spec_arg()]).error_line();
    assert!(
        line.contains("has no executable /init or /sbin/init"),
        "{line}"
    );
}
