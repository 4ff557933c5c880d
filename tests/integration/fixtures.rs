//! Fixtures built at test time: a source tree that holds every feature the squashfs engine must
//! carry across an injection, and images of it made by the real `mksquashfs`.
//!
//! Nothing here is committed as a binary: each test builds its tree in a tempdir. The tree needs
//! root (ownership, device nodes, `trusted.*` xattrs); without root, or without the squashfs
//! tools, tests skip with a message, except under `CI=true`, where they fail.

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{ci, have_tool};

/// mkfs time of every fixture image, far from the tree's own mtimes so that a test can tell
/// "injected file took the image's mkfs time" from "took some file's mtime".
pub const MKFS_TIME: u32 = 1_700_000_000;

/// The block sizes the engine is proven on (with gzip, xz and zstd): mksquashfs's default and
/// the largest squashfs allows.
pub const BLOCK_SIZES: [(&str, u32); 2] = [("128K", 128 * 1024), ("1M", 1024 * 1024)];

/// Paths inside the image (absolute, as the engine's DEST takes them).
pub const OLD_INIT: &str = "/vxn-init.sh";
pub const OLD_INIT_CONTENT: &[u8] = b"#!/bin/sh\necho old init owned by uid 1000\n";
pub const COMMON_INIT: &str = "/vcontainer-init-common.sh";
pub const BIG_DIR: &str = "/usr/share/big";
pub const BIG_DIR_ENTRIES: usize = 320;
pub const HARDLINK_PAIR: [&str; 2] = ["/usr/bin/pair-a", "/usr/bin/pair-b"];
pub const HARDLINK_TRIPLE: [&str; 3] =
    ["/usr/sbin/triple-1", "/usr/sbin/triple-2", "/opt/triple-3"];
pub const CHAR_DEV: &str = "/dev/console";
pub const CHAR_DEV_RDEV: (u32, u32) = (5, 1);
pub const BLOCK_DEV: &str = "/dev/loop0";
pub const BLOCK_DEV_RDEV: (u32, u32) = (7, 0);
pub const CAP_FILE: &str = "/usr/bin/ping";
/// `cap_net_raw+ep` as the kernel stores it (VFS_CAP_REVISION_2).
pub const CAP_VALUE: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];
pub const SPARSE_FILE: &str = "/var/lib/sparse.img";
pub const OWNED_1000: &str = "/home/user/notes.txt";

/// Says whether a test can run; prints why not (or panics under `CI=true`) when it cannot.
pub fn can_run(test: &str, tools: &[&str]) -> bool {
    // util::have_tool reports (or, under CI=true, fails on) each missing tool itself.
    let missing_tools: Vec<&str> = tools.iter().copied().filter(|t| !have_tool(t)).collect();
    let mut missing: Vec<String> = missing_tools
        .iter()
        .map(|t| format!("tool `{t}` is not installed"))
        .collect();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push("not running as root (ownership, device nodes, trusted.* xattrs)".into());
    }
    if missing.is_empty() {
        return true;
    }
    let why = missing.join("; ");
    if ci() {
        panic!("{test}: cannot run under CI=true: {why} (scripts/test.sh installs the tools)");
    }
    eprintln!("SKIP {test}: {why}");
    false
}

/// Runs a command and returns its output; panics with the command and its stderr when it
/// cannot be started or exits non-zero.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A source tree in a tempdir; the directory goes away with the value.
pub struct Tree {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Tree {
    /// Host path of an image path such as "/usr/bin/pair-a".
    pub fn host(&self, image_path: &str) -> PathBuf {
        self.root.join(image_path.trim_start_matches('/'))
    }
}

/// Deterministic bytes that neither gzip nor xz can shrink (xorshift64*).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text-like bytes that compress well but not to nothing.
pub fn text(len: usize, tag: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 64);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!("{tag} line {i}: the quick brown fox {}\n", i * 7919 % 1013).as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

/// Names of the big directory's entries: long, so that its listing spans several metadata
/// blocks and mksquashfs writes a directory index.
pub fn big_dir_names() -> Vec<String> {
    (0..BIG_DIR_ENTRIES)
        .map(|i| format!("entry-{i:04}-{}", "long-name-segment-".repeat(6)))
        .collect()
}

pub fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("fixture paths hold no NUL")
}

fn write(path: &Path, bytes: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(bytes).unwrap();
    drop(f);
    chmod(path, mode);
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
}

/// chown then chmod: chown clears setuid/setgid, so the mode must come second.
fn own(path: &Path, uid: u32, gid: u32, mode: u32) {
    lchown(path, uid, gid);
    chmod(path, mode);
}

fn mknod(path: &Path, kind: libc::mode_t, mode: u32, (major, minor): (u32, u32)) {
    let c = c_path(path);
    // SAFETY: c is a valid NUL-terminated path; mknod has no other preconditions.
    let rc = unsafe {
        libc::mknod(
            c.as_ptr(),
            kind | mode as libc::mode_t,
            libc::makedev(major, minor),
        )
    };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Sets an xattr on the path itself (not a symlink's target).
pub fn lsetxattr(path: &Path, name: &str, value: &[u8]) {
    let c = c_path(path);
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and a buffer of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "lsetxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Sets a path's mtime (and atime) without following symlinks.
pub fn set_mtime(path: &Path, secs: i64) {
    let c = c_path(path);
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: valid path and a two-element timespec array, as utimensat requires.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(
        rc,
        0,
        "utimensat {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Builds the full feature tree. Callers check [`can_run`] first: this needs root.
pub fn build_tree() -> Tree {
    let dir = tempfile::Builder::new()
        .prefix("vxn-fixture-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let t = Tree { dir, root };
    let h = |p: &str| t.host(p);

    // Directories: empty ones, deep nesting, a sticky one, one owned by a user.
    for d in [
        "/bin",
        "/etc",
        "/dev",
        "/run",
        "/mnt",
        "/srv/empty",
        "/opt",
        "/var/log",
        "/var/lib",
        "/usr/share",
    ] {
        fs::create_dir_all(h(d)).unwrap();
    }
    fs::create_dir_all(h("/a/b/c/d/e/f/g/h/i/j/k/l")).unwrap();
    write(
        &h("/a/b/c/d/e/f/g/h/i/j/k/l/deep.txt"),
        b"at the bottom\n",
        0o644,
    );
    fs::create_dir_all(h("/tmp")).unwrap();
    chmod(&h("/tmp"), 0o1777);
    fs::create_dir_all(h("/home/user")).unwrap();
    lchown(&h("/home/user"), 1000, 1000);
    chmod(&h("/home/user"), 0o750);

    // The init script the injection replaces: someone else's, not executable.
    write(&h(OLD_INIT), OLD_INIT_CONTENT, 0o644);
    lchown(&h(OLD_INIT), 1000, 1000);

    // Regular files of every size class, some owned by others.
    write(&h("/etc/empty"), b"", 0o644);
    write(&h("/etc/hostname"), b"vxn\n", 0o644);
    write(&h("/etc/services"), &text(3000, "services"), 0o644);
    write(&h(OWNED_1000), &text(900, "notes"), 0o600);
    lchown(&h(OWNED_1000), 1000, 1000);
    write(&h("/var/log/messages"), &text(2000, "log"), 0o640);
    lchown(&h("/var/log/messages"), 0, 5);
    write(&h("/usr/lib/block-128k.bin"), &noise(128 * 1024, 1), 0o644);
    write(
        &h("/usr/lib/block-1m.bin"),
        &text(1024 * 1024, "block"),
        0o644,
    );
    write(
        &h("/usr/lib/several.bin"),
        &noise(300 * 1024 + 17, 2),
        0o644,
    );
    let mut big = text(2 * 1024 * 1024, "big");
    big.extend_from_slice(&noise(1024 * 1024, 3));
    write(&h("/usr/lib/big-3m.bin"), &big, 0o644);

    // Special modes.
    write(&h("/usr/bin/su"), &text(5000, "su"), 0o4755);
    write(&h("/usr/bin/wall"), &text(4000, "wall"), 0o2755);
    own(&h("/usr/bin/wall"), 0, 5, 0o2755);
    write(&h("/usr/bin/both"), &text(100, "both"), 0o6711);

    // Hardlinks: a pair, and a triple with an xattr (shared by its three names).
    write(&h(HARDLINK_PAIR[0]), &text(7000, "pair"), 0o755);
    fs::hard_link(h(HARDLINK_PAIR[0]), h(HARDLINK_PAIR[1])).unwrap();
    fs::create_dir_all(h("/usr/sbin")).unwrap();
    write(&h(HARDLINK_TRIPLE[0]), &noise(200 * 1024, 4), 0o750);
    own(&h(HARDLINK_TRIPLE[0]), 0, 5, 0o750);
    lsetxattr(&h(HARDLINK_TRIPLE[0]), "user.link", b"triple");
    for other in &HARDLINK_TRIPLE[1..] {
        fs::hard_link(h(HARDLINK_TRIPLE[0]), h(other)).unwrap();
    }

    // Symlinks: short, long target (> 256 bytes), dangling, one owned by a user.
    symlink("usr/bin", h("/bin/usrbin")).unwrap();
    let long_target = format!("/{}target", "very-long-directory-name/".repeat(12));
    assert!(long_target.len() > 256);
    symlink(&long_target, h("/usr/lib/long-link")).unwrap();
    symlink("does-not-exist", h("/etc/dangling")).unwrap();
    symlink("notes.txt", h("/home/user/link")).unwrap();
    lchown(&h("/home/user/link"), 1000, 1000);

    // Devices, a fifo, a socket.
    mknod(&h(CHAR_DEV), libc::S_IFCHR, 0o620, CHAR_DEV_RDEV);
    own(&h(CHAR_DEV), 0, 5, 0o620);
    mknod(&h("/dev/null"), libc::S_IFCHR, 0o666, (1, 3));
    mknod(&h(BLOCK_DEV), libc::S_IFBLK, 0o660, BLOCK_DEV_RDEV);
    own(&h(BLOCK_DEV), 0, 6, 0o660);
    mknod(&h("/run/initctl"), libc::S_IFIFO, 0o600, (0, 0));
    let sock = std::os::unix::net::UnixListener::bind(h("/run/daemon.sock")).unwrap();
    drop(sock);
    chmod(&h("/run/daemon.sock"), 0o777);

    // A sparse file: 2 MB with 4 KB of data at 1 MB.
    {
        let p = h(SPARSE_FILE);
        let f = fs::File::create(&p).unwrap();
        f.set_len(2 * 1024 * 1024).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_at(&noise(4096, 5), 1024 * 1024).unwrap();
    }

    // Duplicates: the same content under several names, in blocks and in fragments.
    let dup_blocks = noise(256 * 1024, 6);
    let dup_small = text(1500, "dup");
    for p in ["/usr/share/dup-1", "/usr/share/dup-2", "/opt/dup-3"] {
        write(&h(p), &dup_blocks, 0o644);
    }
    for p in ["/usr/share/small-dup-1", "/etc/small-dup-2"] {
        write(&h(p), &dup_small, 0o644);
    }

    // xattrs of every namespace the issue names, on files and directories.
    write(&h(CAP_FILE), &text(6000, "ping"), 0o755);
    lsetxattr(&h(CAP_FILE), "security.capability", &CAP_VALUE);
    lsetxattr(&h("/etc/hostname"), "user.comment", b"a user xattr");
    lsetxattr(&h("/etc/hostname"), "trusted.origin", b"fixture");
    lsetxattr(&h("/opt"), "trusted.overlay.opaque", b"y");
    lsetxattr(&h("/home/user"), "user.dir", b"home");
    lsetxattr(&h("/usr/lib/long-link"), "trusted.symlink", b"on a symlink");
    lsetxattr(&h(SPARSE_FILE), "user.big", &vec![b'v'; 1000]);

    // The big directory.
    fs::create_dir_all(h(BIG_DIR)).unwrap();
    for (i, name) in big_dir_names().iter().enumerate() {
        write(
            &h(BIG_DIR).join(name),
            &noise(700 + i, 100 + i as u64),
            0o644,
        );
    }

    // Distinct, deterministic mtimes on everything (children before parents, as writing a
    // child changes its parent's mtime), so that a test can see each one survive.
    let mut all = Vec::new();
    collect(&t.root, &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_600_000_000 + (i as i64) * 3607);
    }
    t
}

/// Every path below `dir`, plus `dir` itself, without following symlinks.
pub fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Makes an image of `src` with mksquashfs's defaults (NFS export table, xattrs, dedup) and a
/// fixed mkfs time.
pub fn mksquashfs(src: &Path, out: &Path, comp: &str, block: &str, extra: &[&str]) {
    run_ok(
        Command::new("mksquashfs")
            .arg(src)
            .arg(out)
            .args([
                "-noappend",
                "-no-progress",
                "-quiet",
                "-comp",
                comp,
                "-b",
                block,
            ])
            .args(["-mkfs-time", &MKFS_TIME.to_string()])
            .args(extra),
    );
}

/// One fixture image of the feature tree.
pub struct Image {
    pub name: String,
    pub path: PathBuf,
    pub block_size: u32,
}

/// Makes the image of `tree` for one compressor and block size, inside the tree's tempdir.
pub fn image(tree: &Tree, comp: &'static str, block: (&str, u32)) -> Image {
    let name = format!("{comp}-{}", block.0);
    let path = tree.dir.path().join(format!("{name}.squashfs"));
    mksquashfs(&tree.root, &path, comp, block.0, &[]);
    Image {
        name,
        path,
        block_size: block.1,
    }
}

#[test]
fn fixture_images_hold_every_feature() {
    if !can_run(
        "fixture_images_hold_every_feature",
        &["mksquashfs", "unsquashfs", "rdsquashfs"],
    ) {
        return;
    }
    let tree = build_tree();
    let img = image(&tree, "gzip", BLOCK_SIZES[0]);
    let sb = String::from_utf8_lossy(
        &run_ok(Command::new("unsquashfs").arg("-s").arg(&img.path)).stdout,
    )
    .into_owned();
    assert!(sb.contains("Filesystem is exportable via NFS"), "{sb}");
    assert!(
        sb.contains("Number of xattr ids 7"),
        "expected 7 distinct xattr sets:\n{sb}"
    );
    let ls = String::from_utf8_lossy(
        &run_ok(
            Command::new("unsquashfs")
                .args(["-lln", "-UTC"])
                .arg(&img.path),
        )
        .stdout,
    )
    .into_owned();
    for needle in [
        "crw--w---- 0/5",
        "brw-rw---- 0/6",
        "prw-------",
        "srwxrwxrwx",
        "-rwsr-xr-x",
        "-rwxr-sr-x 0/5",
        "-rws--s--x",
        "drwxrwxrwt",
        "-rw-r----- 0/5",
    ] {
        assert!(ls.contains(needle), "listing lacks {needle:?}:\n{ls}");
    }
    let old_init = ls
        .lines()
        .find(|l| l.ends_with("squashfs-root/vxn-init.sh"))
        .unwrap_or_default();
    assert!(old_init.starts_with("-rw-r--r-- 1000/1000"), "{old_init}");
    let big = String::from_utf8_lossy(
        &run_ok(
            Command::new("rdsquashfs")
                .args(["-s", BIG_DIR])
                .arg(&img.path),
        )
        .stdout,
    )
    .into_owned();
    assert!(
        big.contains("Directory index entries: ") && !big.contains("Directory index entries: 0"),
        "{BIG_DIR} has no directory index:\n{big}"
    );
    let in_big = ls
        .lines()
        .filter(|l| l.contains("squashfs-root/usr/share/big/"))
        .count();
    assert_eq!(in_big, BIG_DIR_ENTRIES);
}

/// The symlinks of [`usrmerged_tree`]: where each is and what it says. The first four are the
/// usrmerge layout (OE-core's `usrmerge`, Debian since 12), one of them absolute; `/up` climbs
/// past the root, which stops `..` inside the image; the last three are what a bad DEST meets.
pub const USRMERGE_LINKS: [(&str, &str); 8] = [
    ("/sbin", "usr/sbin"),
    ("/lib", "usr/lib"),
    ("/lib64", "/usr/lib"),
    ("/up", "../../../../usr/share"),
    ("/broken", "usr/nowhere"),
    ("/loop-a", "loop-b"),
    ("/loop-b", "loop-a"),
    ("/tofile", "etc/hostname"),
];

/// The feature tree of [`build_tree`], usrmerged: /bin, /sbin and /lib are symlinks into /usr,
/// plus the other links of [`USRMERGE_LINKS`]. Callers check [`can_run`] first.
pub fn usrmerged_tree() -> Tree {
    let t = build_tree();
    // build_tree's /bin holds one symlink ("usrbin"); usrmerged, it lives in /usr/bin.
    fs::rename(t.host("/bin/usrbin"), t.host("/usr/bin/usrbin")).unwrap();
    fs::remove_dir(t.host("/bin")).unwrap();
    symlink("usr/bin", t.host("/bin")).unwrap();
    for (link, target) in USRMERGE_LINKS {
        symlink(target, t.host(link)).unwrap();
    }
    t
}
