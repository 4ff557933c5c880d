//! Faults around compile and deploy: SIGKILL at many points, a full disk, unreadable inputs and
//! unwritable outputs, two compiles on one build_dir at once.
//!
//! The promise checked everywhere: a final name holds a complete file (the previous one or the
//! new one, byte for byte) or nothing; a state file, when present, describes exactly the outputs
//! beside it; temporary files are gone after the next run, which succeeds.
//!
//! Kills land at spread delays and, through strace's fault injection, just before each fsync,
//! link, rename and unlink the tool makes. A kill between two renames can leave a mix of old
//! and new files, each whole: compile then has no state file (deploy refuses until compile
//! reruns); deploy's directory then has a SHA256SUMS that disagrees with some files until the
//! next deploy (see docs/reliability.md).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bounded::{self, Limits, NOBODY};
use crate::fixtures::mksquashfs;
use crate::hostile::noise;
use crate::util::{have_tool, names, sha256, Arch, Fixture, TestDir};

const STATE: &str = ".vxn-blobs-state.json";
const LOCK: &str = ".vxn-blobs.lock";
/// Every temporary name the tool creates contains this (the engine's own staging file too).
const TEMP_MARK: &str = ".vxn-blobs-tmp-";
const BUILD_OUTPUTS: [&str; 5] = [
    "initramfs.cpio.gz",
    "kernel",
    "rootfs.img",
    "rootfs.img.vxn-reuse",
    STATE,
];

/// The sha256 of each file in `dir` by name, temporaries and the lock file left out.
type Snapshot = BTreeMap<String, String>;

fn snapshot(dir: &Path) -> Snapshot {
    names(dir)
        .into_iter()
        .filter(|n| n != LOCK && !is_temporary(n))
        .map(|n| {
            let digest = sha256(&dir.join(&n));
            (n, digest)
        })
        .collect()
}

/// Replaces the fixture's rootfs with one whose xz recompression takes a while (2 MiB that
/// does not compress), so that kills land inside the work and not only before or after it.
fn slow_rootfs(fx: &Fixture) {
    let tree = fx.root.join("slow-tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("noise"), noise(2 << 20, 0x2545_f491_4f6c_dd1d)).unwrap();
    mksquashfs(&tree, &fx.input("rootfs"), "gzip", "128K", &[]);
}

/// Makes the next compile produce other bytes: the injected script changes.
fn set_version(fx: &Fixture, version: &str) {
    fs::write(
        fx.inject_source(0),
        format!("#!/bin/sh\n# version {version}\nexec /sbin/init\n"),
    )
    .unwrap();
}

/// Where a run is killed.
#[derive(Debug, Clone)]
enum KillPoint {
    /// SIGKILL after this long, unless it ended before.
    After(Duration),
    /// SIGKILL as the tool enters its `n`-th call of one of these system calls (strace's fault
    /// injection; the call itself is not made): before each fsync, link, rename and unlink.
    AtCall(&'static str, u32),
}

/// The system calls that change what is under a name or make a change durable, in strace's
/// syntax ("?" tolerates one an architecture lacks).
const FSYNC: &str = "fsync,?fdatasync";
const LINK: &str = "?link,?linkat";
const RENAME: &str = "?rename,?renameat,?renameat2";
const UNLINK: &str = "?unlink,?unlinkat";

/// Kill points for a run that takes about `full`: spread over its duration, and (when strace
/// is there) at each of the first `n` calls of each kind in `calls`, which covers every such
/// call the run makes.
fn kill_points(full: Duration, delays: u32, calls: &[(&'static str, u32)]) -> Vec<KillPoint> {
    let mut points: Vec<KillPoint> = (0..delays)
        .map(|i| KillPoint::After(full * i / (delays - 1)))
        .collect();
    if have_tool("strace") {
        for &(call, n) in calls {
            points.extend((1..=n).map(|i| KillPoint::AtCall(call, i)));
        }
    }
    points
}

/// Runs `args` and kills it at `point`. Returns whether it was killed (rather than finished).
fn kill_at(dir: &TestDir, args: &[&str], point: &KillPoint) -> bool {
    let quiet = |mut c: Command| {
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    };
    match point {
        KillPoint::After(delay) => {
            let mut child = quiet(dir.command(args, &[])).spawn().unwrap();
            std::thread::sleep(*delay);
            let running = child.try_wait().unwrap().is_none();
            child.kill().unwrap();
            child.wait().unwrap();
            running
        }
        KillPoint::AtCall(calls, n) => {
            let tool = dir.command(args, &[]);
            let mut strace = Command::new("strace");
            strace
                .args(["-f", "-qq", "-o", "/dev/null"])
                .arg(format!("--trace={calls}"))
                .arg(format!("--inject={calls}:signal=SIGKILL:when={n}"))
                .arg("--")
                .arg(tool.get_program())
                .args(tool.get_args())
                .current_dir(dir.path())
                .env_remove("SOURCE_DATE_EPOCH")
                .env_remove("RUST_LOG");
            !quiet(strace).status().unwrap().success()
        }
    }
}

/// Checks a directory after a kill: each final name holds one of the complete versions, and the
/// state file (for build_dir) describes the outputs beside it. Everything else is a temporary.
fn check_after_kill(dir: &Path, old: &Snapshot, new: &Snapshot, with_state: bool) -> String {
    let now = snapshot(dir);
    let mut kinds = Vec::new();
    for (name, digest) in &now {
        let version = if old.get(name) == Some(digest) {
            "old"
        } else if new.get(name) == Some(digest) {
            "new"
        } else {
            panic!(
                "{} holds neither the old nor the new complete file",
                dir.join(name).display()
            );
        };
        kinds.push(format!("{name}={version}"));
    }
    if with_state {
        if let Some(state) = now.get(STATE) {
            let set = if old.get(STATE) == Some(state) {
                old
            } else {
                new
            };
            for name in BUILD_OUTPUTS {
                assert_eq!(
                    now.get(name),
                    set.get(name),
                    "the state file does not describe {name}: {kinds:?}"
                );
            }
        }
    }
    kinds.join(" ")
}

fn is_temporary(name: &str) -> bool {
    name.contains(TEMP_MARK) || name.ends_with(".partial")
}

fn assert_no_temporaries(dir: &Path) {
    let left: Vec<String> = names(dir).into_iter().filter(|n| is_temporary(n)).collect();
    assert!(left.is_empty(), "{} still holds {left:?}", dir.display());
}

#[test]
fn compile_killed_at_many_points() {
    if !have_tool("mksquashfs") {
        return;
    }
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    slow_rootfs(&fx);
    let build = fx.build_dir();
    set_version(&fx, "new");
    let started = Instant::now();
    fx.compile(&dir);
    let full = started.elapsed();
    let new = snapshot(&build);
    set_version(&fx, "old");
    fx.compile(&dir);
    let old = snapshot(&build);
    assert_ne!(old["rootfs.img"], new["rootfs.img"]);

    let mut seen = Vec::new();
    for point in kill_points(full, 8, &[(FSYNC, 8), (RENAME, 6), (UNLINK, 2)]) {
        set_version(&fx, "new");
        let killed = kill_at(&dir, &["compile", "--spec", &fx.spec_arg()], &point);
        let kinds = check_after_kill(&build, &old, &new, true);
        seen.push(format!("{point:?} killed={killed}: {kinds}"));
        // The next run succeeds, cleans up, and a deploy of it works.
        set_version(&fx, "old");
        fx.compile(&dir);
        assert_eq!(snapshot(&build), old);
        assert_no_temporaries(&build);
    }
    fx.deploy(&dir);
    eprintln!("compile kills:\n{}", seen.join("\n"));
}

/// Kills during a compile that reuses the previous rootfs.img's blocks (after one file of the
/// rootfs changed), at the same kinds of points: the build_dir must hold the old or the new
/// set (with a record that describes its rootfs.img, or one that the next run refuses), and
/// the next compile must write exactly what a cold compile of the new inputs writes.
#[test]
fn an_incremental_compile_killed_at_many_points() {
    if !have_tool("mksquashfs") {
        return;
    }
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    let tree = fx.root.join("kill-tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("kept"), noise(1 << 20, 0x9e37_79b9_7f4a_7c15)).unwrap();
    fs::write(tree.join("small.conf"), b"version = old\n").unwrap();
    let image = |to: &Path| mksquashfs(&tree, to, "gzip", "128K", &[]);
    let (old_img, new_img) = (fx.root.join("old.sq"), fx.root.join("new.sq"));
    image(&old_img);
    fs::write(tree.join("changed"), noise(1 << 20, 0x2545_f491_4f6c_dd1d)).unwrap();
    fs::write(tree.join("small.conf"), b"version = new\n").unwrap();
    image(&new_img);
    let rootfs = fx.input("rootfs");
    let use_image = |img: &Path| {
        fs::copy(img, &rootfs).unwrap();
    };

    // The reference: a cold compile of the new inputs in a build_dir of its own.
    use_image(&new_img);
    fs::create_dir(fx.root.join("cold")).unwrap();
    fx.set("build_dir", "cold".into());
    fx.compile(&dir);
    let cold = snapshot(&fx.root.join("cold"));
    fx.set("build_dir", "build".into());

    let build = fx.build_dir();
    use_image(&old_img);
    fx.compile(&dir);
    let old = snapshot(&build);
    use_image(&new_img);
    let started = Instant::now();
    fx.compile(&dir);
    let full = started.elapsed();
    let new = snapshot(&build);
    for name in ["rootfs.img", "rootfs.img.vxn-reuse"] {
        assert_eq!(
            new[name], cold[name],
            "{name} differs from the cold compile's"
        );
    }

    let mut seen = Vec::new();
    for point in kill_points(full, 8, &[(FSYNC, 10), (RENAME, 8), (UNLINK, 3)]) {
        use_image(&old_img);
        fx.compile(&dir);
        assert_eq!(snapshot(&build), old);
        use_image(&new_img);
        let killed = kill_at(&dir, &["compile", "--spec", &fx.spec_arg()], &point);
        let kinds = check_after_kill(&build, &old, &new, true);
        seen.push(format!("{point:?} killed={killed}: {kinds}"));
        fx.compile(&dir);
        assert_eq!(snapshot(&build), new, "after {point:?}");
        assert_no_temporaries(&build);
    }
    fx.deploy(&dir);
    eprintln!("incremental compile kills:\n{}", seen.join("\n"));
}

#[test]
fn deploy_killed_at_many_points() {
    // Deploy hardlinks and hashes; the small sample rootfs is enough to spread kills over it.
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    let deployed = fx.deployed();
    set_version(&fx, "new");
    fx.compile(&dir);
    let started = Instant::now();
    fx.deploy(&dir);
    let full = started.elapsed();
    let new = snapshot(&deployed);
    set_version(&fx, "old");
    fx.compile(&dir);
    fx.deploy(&dir);
    let old = snapshot(&deployed);
    assert_ne!(old["rootfs.img"], new["rootfs.img"]);

    let mut seen = Vec::new();
    for point in kill_points(full, 6, &[(FSYNC, 4), (LINK, 4), (RENAME, 6), (UNLINK, 1)]) {
        set_version(&fx, "new");
        fx.compile(&dir);
        let killed = kill_at(&dir, &["deploy", "--spec", &fx.spec_arg()], &point);
        let kinds = check_after_kill(&deployed, &old, &new, false);
        seen.push(format!("{point:?} killed={killed}: {kinds}"));
        // The next deploy (of the new compile) completes the directory. (Temporaries it may
        // leave are a_redeploy_leaves_no_temporaries' subject.)
        fx.deploy(&dir);
        assert_eq!(snapshot(&deployed), new);
        set_version(&fx, "old");
        fx.compile(&dir);
        fx.deploy(&dir);
    }
    eprintln!("deploy kills:\n{}", seen.join("\n"));
}

/// The outcome every fault must have: a clean error naming `expected`, the previous outputs
/// untouched, no temporaries, and a next run that works.
fn assert_clean(ended: &bounded::Ended, expected: &[&str], what: &str) {
    if let Some(why) = ended.unclean_failure(expected) {
        panic!("{what}: {why}");
    }
}

#[test]
fn a_full_disk_during_compile_and_deploy() {
    if !have_tool("mksquashfs") {
        return;
    }
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    slow_rootfs(&fx);
    set_version(&fx, "old");
    fx.compile(&dir);
    fx.deploy(&dir);
    let old_build = snapshot(&fx.build_dir());
    let old_deployed = snapshot(&fx.deployed());
    set_version(&fx, "new");
    // No file may grow past the limit: from nothing at all to half of the rootfs.
    for limit in [0u64, 1, 4096, 1 << 20] {
        let limits = Limits {
            file_size: Some(limit),
            ..Limits::default()
        };
        let ended = bounded::run(
            dir.command(&["compile", "--spec", &fx.spec_arg()], &[]),
            limits,
        );
        let build = fx.build_dir().display().to_string();
        assert_clean(
            &ended,
            &[&build, "File too large"],
            &format!("compile, {limit} bytes"),
        );
        assert_eq!(
            snapshot(&fx.build_dir()),
            old_build,
            "compile, {limit} bytes"
        );
        let ended = bounded::run(
            dir.command(&["deploy", "--spec", &fx.spec_arg()], &[]),
            limits,
        );
        // The compile failed, so deploy still has the old one to install: with no room for
        // its README it must fail cleanly too.
        if limit < 64 {
            let deployed = fx.deployed().display().to_string();
            assert_clean(
                &ended,
                &[&deployed, "File too large"],
                &format!("deploy, {limit} bytes"),
            );
        }
        assert_eq!(
            snapshot(&fx.deployed()),
            old_deployed,
            "deploy, {limit} bytes"
        );
    }
    assert_no_temporaries(&fx.build_dir());
    fx.compile(&dir);
    fx.deploy(&dir);
}

#[test]
fn a_redeploy_leaves_no_temporaries() {
    // Deploy stages each output as a hardlink to the build output and renames it over the
    // final name. When the final name already is a link to that same inode (a redeploy of an
    // unchanged compile), rename(2) succeeds without doing anything, so the staged name stays.
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);
    fx.deploy(&dir);
    fx.deploy(&dir);
    assert_no_temporaries(&fx.deployed());
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` at `at`; `None` when this machine does not allow mounts.
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        fs::create_dir_all(at).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn no_space_left_on_a_small_filesystem() {
    if !have_tool("mksquashfs") {
        return;
    }
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    slow_rootfs(&fx);
    let Some(_small) = Tmpfs::mount(&dir.path().join("small"), "1m") else {
        eprintln!(
            "skipping: mounting a tmpfs is not allowed here (RLIMIT_FSIZE covers a full disk)"
        );
        return;
    };
    // build_dir on a filesystem too small for the 2 MiB rootfs.img.
    fs::create_dir(dir.path().join("small/build")).unwrap();
    fx.set("build_dir", "small/build".into());
    let ended = bounded::run(
        dir.command(&["compile", "--spec", &fx.spec_arg()], &[]),
        Limits::default(),
    );
    assert_clean(
        &ended,
        &["No space left on device"],
        "compile onto a full tmpfs",
    );
    assert_eq!(names(&dir.path().join("small/build")), [LOCK]);
    // deploy_dir there too (the hardlinks then cross filesystems, so deploy copies).
    fx.set("build_dir", "build".into());
    fs::create_dir(dir.path().join("small/deploy")).unwrap();
    fx.set("deploy_dir", "small/deploy".into());
    fx.compile(&dir);
    let ended = bounded::run(
        dir.command(&["deploy", "--spec", &fx.spec_arg()], &[]),
        Limits::default(),
    );
    assert_clean(
        &ended,
        &["No space left on device"],
        "deploy onto a full tmpfs",
    );
    let target = dir.path().join("small/deploy/vxn/x86_64");
    assert!(snapshot(&target).is_empty(), "{:?}", names(&target));
}

/// Gives `path` to nobody, the user unprivileged runs take when the tests run as root (otherwise
/// they run as the tests' own user, who owns it already).
fn give_to_nobody(path: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

#[test]
fn unreadable_inputs_and_unwritable_outputs() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    // The unprivileged user must reach the fixture: the temporary directory is private.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for d in [fx.build_dir(), dir.path().join("deploy")] {
        give_to_nobody(&d);
    }
    let unprivileged = Limits {
        unprivileged: true,
        ..Limits::default()
    };
    let run = |args: &[&str]| bounded::run(dir.command(args, &[]), unprivileged);
    let spec = fx.spec_arg();
    let compile = ["compile", "--spec", spec.as_str()];
    let deploy = ["deploy", "--spec", spec.as_str()];

    for key in ["rootfs", "initramfs", "kernel"] {
        let input = fx.input(key);
        fs::set_permissions(&input, fs::Permissions::from_mode(0o000)).unwrap();
        let ended = run(&compile);
        let shown = input.display().to_string();
        assert_clean(
            &ended,
            &[&shown, "Permission denied"],
            &format!("unreadable {key}"),
        );
        assert_eq!(names(&fx.build_dir()), [LOCK], "unreadable {key}");
        fs::set_permissions(&input, fs::Permissions::from_mode(0o644)).unwrap();
    }
    let source = fx.inject_source(0);
    fs::set_permissions(&source, fs::Permissions::from_mode(0o000)).unwrap();
    assert_clean(
        &run(&compile),
        &[&source.display().to_string(), "Permission denied"],
        "unreadable inject source",
    );
    fs::set_permissions(&source, fs::Permissions::from_mode(0o644)).unwrap();

    assert_eq!(run(&compile).code, Some(0));
    let before = snapshot(&fx.build_dir());
    // build_dir read-only for the user: a changed input needs a rebuild it cannot write.
    set_version(&fx, "unwritable");
    fs::set_permissions(fx.build_dir(), fs::Permissions::from_mode(0o555)).unwrap();
    let shown = fx.build_dir().display().to_string();
    assert_clean(&run(&compile), &[&shown], "read-only build_dir");
    assert_eq!(snapshot(&fx.build_dir()), before);
    fs::set_permissions(fx.build_dir(), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(run(&compile).code, Some(0));

    // deploy_dir read-only: nothing appears, then it works once writable.
    let deploy_dir = dir.path().join("deploy");
    fs::set_permissions(&deploy_dir, fs::Permissions::from_mode(0o555)).unwrap();
    let shown = deploy_dir.display().to_string();
    assert_clean(&run(&deploy), &[&shown], "read-only deploy_dir");
    assert!(names(&deploy_dir).is_empty());
    fs::set_permissions(&deploy_dir, fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(run(&deploy).code, Some(0));
    assert_no_temporaries(&fx.build_dir());
    assert_no_temporaries(&fx.deployed());
}

#[test]
fn two_compiles_on_one_build_dir_at_once() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    // A second spec on the same build_dir that injects other bytes.
    let other_source = dir.path().join("inputs/other-init.sh");
    fs::write(&other_source, "#!/bin/sh\n# the other spec\n").unwrap();
    let mut other = fx.spec.clone();
    other["inject"][0]["source"] = "inputs/other-init.sh".into();
    let other_spec = dir.path().join("other.json");
    fs::write(&other_spec, serde_json::to_string(&other).unwrap()).unwrap();
    let specs = [fx.spec_arg(), other_spec.display().to_string()];

    let mut versions = Vec::new();
    for spec in &specs {
        dir.run(&["compile", "--spec", spec]).ok();
        versions.push(snapshot(&fx.build_dir()));
    }
    assert_ne!(versions[0]["rootfs.img"], versions[1]["rootfs.img"]);
    for round in 0..6 {
        let mut children: Vec<std::process::Child> = specs
            .iter()
            .map(|spec| {
                dir.command(&["compile", "--spec", spec], &[])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in &mut children {
            assert!(child.wait().unwrap().success(), "round {round}");
        }
        // Whichever finished last, its outputs and its state are there together.
        let now = snapshot(&fx.build_dir());
        assert!(
            versions.contains(&now),
            "round {round}: the outputs are a mix of two compiles"
        );
    }
    assert_no_temporaries(&fx.build_dir());
    dir.run(&["compile", "--spec", &specs[0]]).ok();
    dir.run(&["deploy", "--spec", &specs[0]]).ok();
}
