//! `vxn-blobs inject` judged by the real tools: for every fixture image (gzip, xz, zstd; 128K and
//! 1M blocks) the output must differ from the input only in the two injected files, as seen by
//! squashfs-tools (`unsquashfs`), squashfs-tools-ng (`sqfsdiff`, `rdsquashfs`) and, where a loop
//! mount is allowed, the kernel. The same checks run on other mksquashfs layouts (uncompressed,
//! fragment and dedup variants, lz4, 4K blocks, ...), on a gensquashfs image and on injections
//! into an indexed directory; an oracle self-test proves they accept mksquashfs's own injection
//! and catch each kind of loss. Also: byte-identical reruns, SOURCE_DATE_EPOCH, `install`-like
//! replacement of a hardlinked file, and clean failures on bad input.
//!
//! Checks collect every difference they find before failing, so one run tells the engine's
//! author everything that is wrong with a fixture, not just the first thing.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsString};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixtures::{self, can_run, run_ok, Image, Tree};
use crate::util::{sha256, umask, Run, TestDir};

const TOOLS: &[&str] = &[
    "mksquashfs",
    "unsquashfs",
    "sqfsdiff",
    "rdsquashfs",
    "getfattr",
];
const K128: (&str, u32) = fixtures::BLOCK_SIZES[0];
const HARDLINK_TRIPLE_LAST: &str = fixtures::HARDLINK_TRIPLE[2];

/// Runs `vxn-blobs` with `args` in a fresh directory; SOURCE_DATE_EPOCH is removed unless `sde`
/// gives it.
fn vxn(args: Vec<OsString>, sde: Option<&str>) -> Run {
    let args: Vec<&str> = args
        .iter()
        .map(|a| a.to_str().expect("test paths are UTF-8"))
        .collect();
    let env: Vec<(&str, &str)> = sde.map(|v| ("SOURCE_DATE_EPOCH", v)).into_iter().collect();
    TestDir::new().run_with(&args, &env)
}

/// Whether a run exited 0.
fn succeeded(run: &Run) -> bool {
    run.code == Some(0)
}

/// Files to inject, written on the host: by default the seed's two init scripts.
struct Scripts {
    _dir: tempfile::TempDir,
    /// (image path, host source, bytes); the first is added with an explicit ":0755", the
    /// others with the default mode, which must also be 0755.
    files: Vec<(String, PathBuf, Vec<u8>)>,
}

impl Scripts {
    /// Destinations and contents of what the injection puts in the image.
    fn injected(&self) -> Vec<(&str, &Vec<u8>)> {
        self.files.iter().map(|(d, _, b)| (d.as_str(), b)).collect()
    }

    fn dests(&self) -> Vec<&str> {
        self.files.iter().map(|(d, _, _)| d.as_str()).collect()
    }

    fn init(&self) -> &Path {
        &self.files[0].1
    }

    fn init_bytes(&self) -> &[u8] {
        &self.files[0].2
    }
}

/// The seed's pair: /vxn-init.sh (replacing the fixture's old one) and a new
/// /vcontainer-init-common.sh.
fn scripts() -> Scripts {
    scripts_at(&[fixtures::OLD_INIT, fixtures::COMMON_INIT])
}

/// Files with the given destinations and contents.
fn files_at(files: &[(&str, Vec<u8>)]) -> Scripts {
    let dir = tempfile::tempdir().unwrap();
    let mut out = Vec::new();
    for (i, (dest, bytes)) in files.iter().enumerate() {
        let source = dir.path().join(format!("file-{i}"));
        fs::write(&source, bytes).unwrap();
        out.push((dest.to_string(), source, bytes.clone()));
    }
    Scripts {
        _dir: dir,
        files: out,
    }
}

fn scripts_at(dests: &[&str]) -> Scripts {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, dest) in dests.iter().enumerate() {
        let mut bytes = format!("#!/bin/sh\n# injected as {dest}\n").into_bytes();
        // The first is larger than a page and than the old file, so a size or fragment mix-up
        // shows; the others are small.
        let lines = if i == 0 { 200 } else { 3 };
        for n in 0..lines {
            bytes.extend_from_slice(format!("echo step {n}\n").as_bytes());
        }
        let source = dir.path().join(format!("script-{i}.sh"));
        fs::write(&source, &bytes).unwrap();
        files.push((dest.to_string(), source, bytes));
    }
    Scripts { _dir: dir, files }
}

/// The seed's injection: the first file at 0755 explicitly, the others at the default mode.
fn inject_args(input: &Path, output: &Path, s: &Scripts, keep: bool) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "inject".into(),
        input.into(),
        "--output".into(),
        output.into(),
    ];
    for (i, (dest, source, _)) in s.files.iter().enumerate() {
        let mut add = OsString::from(source.as_os_str());
        add.push(":");
        add.push(dest);
        if i == 0 {
            add.push(":0755");
        }
        args.extend(["--add".into(), add]);
    }
    if keep {
        args.extend(["--compression".into(), "keep".into()]);
    }
    args
}

/// Directories whose listing an injection changes: the parents of the destinations.
fn parents(dests: &[&str]) -> BTreeSet<String> {
    dests
        .iter()
        .map(|d| match d.rfind('/') {
            Some(0) | None => "/".to_string(),
            Some(i) => d[..i].to_string(),
        })
        .collect()
}

fn stdout_of(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run_ok(cmd).stdout).into_owned()
}

/// mkfs time straight from the superblock (offset 8, little-endian u32).
fn mkfs_time(image: &Path) -> u32 {
    let b = fs::read(image).unwrap();
    u32::from_le_bytes([b[8], b[9], b[10], b[11]])
}

/// `unsquashfs -lln` as a map from image path ("/" for the root) to the line without its name.
fn listing(image: &Path) -> BTreeMap<String, String> {
    let text = stdout_of(Command::new("unsquashfs").args(["-lln", "-UTC"]).arg(image));
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let Some(at) = line.find("squashfs-root") else {
            continue;
        };
        let rest = &line[at + "squashfs-root".len()..];
        let (name, target) = match rest.find(" -> ") {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let path = if name.is_empty() { "/" } else { name };
        map.insert(
            path.to_string(),
            format!("{}{target}", line[..at].trim_end()),
        );
    }
    map
}

/// `rdsquashfs -s` reduced to what must survive: type (basic/extended is representation),
/// mode, owner, mtime, link count, size, sparse bytes, link target, device number, and whether
/// a directory has an index. Inode numbers, table positions and id/xattr indices may change.
fn stat(image: &Path, path: &str) -> (BTreeMap<String, String>, u64) {
    let text = stdout_of(Command::new("rdsquashfs").arg("-s").arg(path).arg(image));
    let mut fields = BTreeMap::new();
    let mut ino = 0;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(": ") else {
            continue;
        };
        let v = v.trim();
        match k {
            "Inode number" => ino = v.parse().unwrap_or(0),
            "Inode type" => {
                let v = v
                    .trim_start_matches("extended ")
                    .trim_start_matches("basic ");
                fields.insert(k.to_string(), v.to_string());
            }
            "UID" | "GID" => {
                let id = v.split(" (").next().unwrap_or(v);
                fields.insert(k.to_string(), id.to_string());
            }
            "Directory index entries" => {
                let has = if v == "0" { "none" } else { "some" };
                fields.insert("Directory index".into(), has.into());
            }
            "Access" | "Last modified" | "Hard link count" | "File size" | "Sparse"
            | "Link target" | "Device number" => {
                fields.insert(k.to_string(), v.to_string());
            }
            _ => {}
        }
    }
    // A basic file inode has no link count or sparse field: it means one link, no holes.
    if fields.get("Inode type").map(String::as_str) == Some("file") {
        fields
            .entry("Hard link count".into())
            .or_insert_with(|| "1".into());
        fields.entry("Sparse".into()).or_insert_with(|| "0".into());
    }
    (fields, ino)
}

fn xattrs(image: &Path, path: &str) -> String {
    stdout_of(Command::new("rdsquashfs").arg("-x").arg(path).arg(image))
}

/// `unsquashfs -s` lines a test compares: compressor (with its options), block size, NFS
/// export, and the counts of ids, xattr ids and inodes.
struct Super {
    compression: Vec<String>,
    block_size: String,
    exportable: bool,
    ids: String,
    xattr_ids: String,
    inodes: u64,
}

fn superblock(image: &Path) -> Super {
    let text = stdout_of(Command::new("unsquashfs").arg("-s").arg(image));
    let mut compression = Vec::new();
    let mut in_comp = false;
    let mut s = Super {
        compression: Vec::new(),
        block_size: String::new(),
        exportable: false,
        ids: String::new(),
        xattr_ids: String::new(),
        inodes: 0,
    };
    for line in text.lines() {
        if line.starts_with("Compression ") {
            in_comp = true;
            compression.push(line.to_string());
            continue;
        }
        if in_comp && line.starts_with('\t') {
            compression.push(line.trim().to_string());
            continue;
        }
        in_comp = false;
        if let Some(v) = line.strip_prefix("Block size ") {
            s.block_size = v.to_string();
        } else if line == "Filesystem is exportable via NFS" {
            s.exportable = true;
        } else if let Some(v) = line.strip_prefix("Number of ids ") {
            s.ids = v.to_string();
        } else if let Some(v) = line.strip_prefix("Number of xattr ids ") {
            s.xattr_ids = v.to_string();
        } else if let Some(v) = line.strip_prefix("Number of inodes ") {
            s.inodes = v.parse().unwrap_or(0);
        }
    }
    s.compression = compression;
    s
}

/// A read-only loop mount, unmounted on drop.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    /// Mounts `image`, or says why it cannot (not root, no loop devices, no squashfs module).
    fn new(image: &Path) -> Result<Mount, String> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(image)
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot start mount: {e}"))?;
        if out.status.success() {
            Ok(Mount { dir })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    fn path(&self, image_path: &str) -> PathBuf {
        self.dir.path().join(image_path.trim_start_matches('/'))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Every xattr of `path` itself, read through the kernel.
fn host_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = fixtures::c_path(path);
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: valid path and a buffer of the length given.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        // An image without an xattr table answers "not supported": it has none.
        if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
            return BTreeMap::new();
        }
        panic!("llistxattr {}: {e}", path.display());
    }
    names.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).unwrap();
        let mut value = vec![0u8; 64 * 1024];
        // SAFETY: valid C strings and a buffer of the length given.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        assert!(len >= 0, "lgetxattr {}", path.display());
        value.truncate(len as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    out
}

/// Compares the two mounted trees path by path through the kernel: metadata, xattrs, symlink
/// targets, contents, hardlink groups. Also looks a name up in the indexed directory.
fn compare_mounts(
    a: &Mount,
    b: &Mount,
    injected: &[&str],
    changed_dirs: &BTreeSet<String>,
    fail: &mut Vec<String>,
) {
    let mut paths_a = Vec::new();
    fixtures::collect(a.dir.path(), &mut paths_a);
    let mut paths_b = Vec::new();
    fixtures::collect(b.dir.path(), &mut paths_b);
    let rel = |root: &Path, ps: &[PathBuf]| -> BTreeSet<String> {
        ps.iter()
            .map(|p| format!("/{}", p.strip_prefix(root).unwrap().display()))
            .collect()
    };
    let set_a = rel(a.dir.path(), &paths_a);
    let set_b = rel(b.dir.path(), &paths_b);
    let added: Vec<_> = set_b.difference(&set_a).collect();
    let removed: Vec<_> = set_a.difference(&set_b).collect();
    if removed.iter().any(|p| !injected.contains(&p.as_str()))
        || added.iter().any(|p| !injected.contains(&p.as_str()))
    {
        fail.push(format!(
            "kernel: path sets differ: only in input {removed:?}, only in output {added:?}"
        ));
    }
    let mut groups_a: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    let mut groups_b: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for p in set_a.intersection(&set_b) {
        if injected.contains(&p.as_str()) {
            continue;
        }
        let (pa, pb) = (a.path(p), b.path(p));
        let (ma, mb) = match (fs::symlink_metadata(&pa), fs::symlink_metadata(&pb)) {
            (Ok(ma), Ok(mb)) => (ma, mb),
            (ra, rb) => {
                fail.push(format!("kernel: lstat {p}: input {ra:?}, output {rb:?}"));
                continue;
            }
        };
        let key = |m: &fs::Metadata| {
            let size = if m.is_dir() { 0 } else { m.size() };
            (
                m.mode(),
                m.uid(),
                m.gid(),
                m.nlink(),
                m.rdev(),
                size,
                m.mtime(),
            )
        };
        let parent_of_injected = changed_dirs.contains(p.as_str())
            && (ma.mode(), ma.uid(), ma.gid()) == (mb.mode(), mb.uid(), mb.gid());
        if key(&ma) != key(&mb) && !parent_of_injected {
            fail.push(format!(
                "kernel: {p}: (mode, uid, gid, nlink, rdev, size, mtime) input {:?} output {:?}",
                key(&ma),
                key(&mb)
            ));
        }
        if ma.is_file() && ma.nlink() > 1 {
            groups_a.entry(ma.ino()).or_default().insert(p);
            groups_b.entry(mb.ino()).or_default().insert(p);
        }
        if host_xattrs(&pa) != host_xattrs(&pb) {
            fail.push(format!(
                "kernel: {p}: xattrs input {:?} output {:?}",
                host_xattrs(&pa),
                host_xattrs(&pb)
            ));
        }
        if ma.file_type().is_symlink() {
            if fs::read_link(&pa).ok() != fs::read_link(&pb).ok() {
                fail.push(format!("kernel: {p}: symlink target differs"));
            }
        } else if ma.is_file() {
            match (fs::read(&pa), fs::read(&pb)) {
                (Ok(x), Ok(y)) if x == y => {}
                (Ok(_), Ok(_)) => fail.push(format!("kernel: {p}: contents differ")),
                (ra, rb) => fail.push(format!(
                    "kernel: read {p}: input {:?}, output {:?}",
                    ra.err(),
                    rb.err()
                )),
            }
        }
    }
    let ga: BTreeSet<_> = groups_a.into_values().collect();
    let gb: BTreeSet<_> = groups_b.into_values().collect();
    if ga != gb {
        fail.push(format!(
            "kernel: hardlink groups differ: input {ga:?} output {gb:?}"
        ));
    }
    // A lookup by exact name goes through the directory index of a large directory.
    for name in fixtures::big_dir_names() {
        let rel = format!("{}/{name}", fixtures::BIG_DIR);
        if a.path(&rel).exists() {
            if let Err(e) = fs::metadata(b.path(&rel)) {
                fail.push(format!("kernel: stat {rel} by name in the output: {e}"));
            }
        }
    }
}

/// Runs `sqfsdiff FLAG -a A -b B`, records every reported difference that is neither about an
/// injected path nor a timestamp of one of `changed_dirs`, and returns the report.
fn sqfsdiff(
    a: &Path,
    b: &Path,
    flag: &str,
    injected: &[&str],
    changed_dirs: &BTreeSet<String>,
    fail: &mut Vec<String>,
) -> String {
    let diff = Command::new("sqfsdiff")
        .arg(flag)
        .arg("-a")
        .arg(a)
        .arg("-b")
        .arg(b)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&diff.stdout).into_owned();
    if diff.status.code() != Some(1) {
        fail.push(format!(
            "sqfsdiff {flag}: expected exit 1 (differences in the injected paths), got {:?}: {}{}",
            diff.status.code(),
            text,
            String::from_utf8_lossy(&diff.stderr)
        ));
    }
    for line in text.lines() {
        let about_injected = injected
            .iter()
            .any(|d| line.contains(d.trim_start_matches('/')));
        let parent_time = changed_dirs
            .iter()
            .any(|d| line == format!("{d} has a different timestamp"));
        if !about_injected && !parent_time {
            fail.push(format!("sqfsdiff {flag}: unexpected difference: {line}"));
        }
    }
    text
}

/// Everything one injection must satisfy; returns the list of what does not hold.
fn check_injection(img: &Image, out: &Path, s: &Scripts, keep: bool) -> Vec<String> {
    let mut fail = Vec::new();
    let injected = s.dests();
    let is_injected = |p: &str| injected.contains(&p);
    let changed_dirs = parents(&injected);
    let in_mkfs_time = mkfs_time(&img.path);
    let la = listing(&img.path);
    let lb = listing(out);
    let new_paths: Vec<&str> = injected
        .iter()
        .copied()
        .filter(|d| !la.contains_key(*d))
        .collect();

    // sqfsdiff: only the injected paths and at most their parents' timestamps may differ.
    let diff_text = sqfsdiff(
        &img.path,
        out,
        "--timestamps",
        &injected,
        &changed_dirs,
        &mut fail,
    );
    for p in &new_paths {
        if !diff_text.contains(&format!("> {}", p.trim_start_matches('/'))) {
            fail.push(format!(
                "sqfsdiff: the new {p} is not reported as added:\n{diff_text}"
            ));
        }
    }

    // unsquashfs -lln: equal apart from the injected lines and their parents' size/time.
    for (p, line) in &la {
        if is_injected(p) {
            continue;
        }
        match lb.get(p) {
            None => fail.push(format!("unsquashfs -lln: {p} missing from the output")),
            Some(other) if changed_dirs.contains(p) => {
                let head = |l: &str| l.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
                if head(line) != head(other) {
                    fail.push(format!(
                        "unsquashfs -lln: {p}: input {line:?} output {other:?}"
                    ));
                }
            }
            Some(other) if other != line => fail.push(format!(
                "unsquashfs -lln: {p}: input {line:?} output {other:?}"
            )),
            Some(_) => {}
        }
    }
    for p in lb.keys() {
        if !la.contains_key(p) && !is_injected(p) {
            fail.push(format!("unsquashfs -lln: unexpected new path {p}"));
        }
    }
    for (p, bytes) in s.injected() {
        let want = "-rwxr-xr-x 0/0";
        match lb.get(p) {
            Some(l)
                if l.starts_with(want)
                    && l.split_whitespace().nth(2) == Some(&bytes.len().to_string()) => {}
            other => fail.push(format!(
                "unsquashfs -lln: {p}: expected {want} with size {}, got {other:?}",
                bytes.len()
            )),
        }
    }

    // rdsquashfs -s and -x for every path: metadata, link counts, xattrs, hardlink groups.
    let mut groups_a: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    let mut groups_b: BTreeMap<u64, BTreeSet<&str>> = BTreeMap::new();
    for p in la.keys().filter(|p| !is_injected(p) && lb.contains_key(*p)) {
        let (mut fa, ia) = stat(&img.path, p);
        let (mut fb, ib) = stat(out, p);
        if changed_dirs.contains(p.as_str()) {
            for f in [&mut fa, &mut fb] {
                f.remove("Last modified");
                f.remove("File size");
            }
        }
        if fa != fb {
            fail.push(format!("rdsquashfs -s {p}: input {fa:?} output {fb:?}"));
        }
        if fa.get("Hard link count").map(String::as_str) != Some("1")
            && fa.get("Inode type").map(String::as_str) == Some("file")
        {
            groups_a.entry(ia).or_default().insert(p);
            groups_b.entry(ib).or_default().insert(p);
        }
        let (xa, xb) = (xattrs(&img.path, p), xattrs(out, p));
        if xa != xb {
            fail.push(format!("rdsquashfs -x {p}: input {xa:?} output {xb:?}"));
        }
    }
    let ga: BTreeSet<_> = groups_a.into_values().collect();
    let gb: BTreeSet<_> = groups_b.into_values().collect();
    if ga != gb {
        fail.push(format!(
            "hardlink groups (rdsquashfs -s inode numbers): input {ga:?} output {gb:?}"
        ));
    }
    for &p in &injected {
        let x = xattrs(out, p);
        if !x.trim().is_empty() {
            fail.push(format!("rdsquashfs -x {p}: injected file has xattrs {x:?}"));
        }
        let (f, _) = stat(out, p);
        let mtime = f.get("Last modified").cloned().unwrap_or_default();
        if !mtime.ends_with(&format!("({in_mkfs_time})")) {
            fail.push(format!(
                "rdsquashfs -s {p}: mtime {mtime:?}, expected the input's mkfs time {in_mkfs_time}"
            ));
        }
        if f.get("Hard link count").map(String::as_str) != Some("1") {
            fail.push(format!("rdsquashfs -s {p}: link count {f:?}, expected 1"));
        }
    }

    // Injected contents, as squashfs-tools-ng extracts them.
    for (p, bytes) in s.injected() {
        let got = Command::new("rdsquashfs")
            .arg("-c")
            .arg(p)
            .arg(out)
            .output()
            .unwrap();
        if !got.status.success() || &got.stdout != bytes {
            fail.push(format!(
                "rdsquashfs -c {p}: contents differ from the source ({} bytes, want {}) {}",
                got.stdout.len(),
                bytes.len(),
                String::from_utf8_lossy(&got.stderr)
            ));
        }
    }

    // unsquashfs -s: export table, xattr ids, ids, block size, compressor, inode count.
    let (sa, sb) = (superblock(&img.path), superblock(out));
    if sa.exportable != sb.exportable {
        fail.push(format!(
            "unsquashfs -s: exportable via NFS: input {} output {}",
            sa.exportable, sb.exportable
        ));
    }
    if sa.xattr_ids != sb.xattr_ids {
        fail.push(format!(
            "unsquashfs -s: xattr ids: input {} output {}",
            sa.xattr_ids, sb.xattr_ids
        ));
    }
    if sa.ids != sb.ids {
        fail.push(format!(
            "unsquashfs -s: ids: input {} output {}",
            sa.ids, sb.ids
        ));
    }
    if sa.block_size != sb.block_size || sb.block_size != img.block_size.to_string() {
        fail.push(format!(
            "unsquashfs -s: block size: input {} output {}",
            sa.block_size, sb.block_size
        ));
    }
    if sb.inodes != sa.inodes + new_paths.len() as u64 {
        fail.push(format!(
            "unsquashfs -s: inodes: input {} output {}, expected {} more (the new paths {new_paths:?})",
            sa.inodes,
            sb.inodes,
            new_paths.len()
        ));
    }
    let want_comp = if keep {
        sa.compression.clone()
    } else {
        vec!["Compression xz".to_string()]
    };
    let got_comp_head: Vec<String> = if keep {
        sb.compression.clone()
    } else {
        sb.compression.iter().take(1).cloned().collect()
    };
    if got_comp_head != want_comp {
        fail.push(format!(
            "unsquashfs -s: compression: input {:?} output {:?}, expected {want_comp:?}",
            sa.compression, sb.compression
        ));
    }
    if mkfs_time(out) != in_mkfs_time {
        fail.push(format!(
            "superblock: mkfs time {}, expected the input's {in_mkfs_time}",
            mkfs_time(out)
        ));
    }

    // The kernel, where a loop mount is allowed.
    match (Mount::new(&img.path), Mount::new(out)) {
        (Ok(ma), Ok(mb)) => {
            compare_mounts(&ma, &mb, &injected, &changed_dirs, &mut fail);
            for (p, bytes) in s.injected() {
                match fs::read(mb.path(p)) {
                    Ok(got) if &got == bytes => {}
                    other => fail.push(format!(
                        "kernel: {p} does not read back as the source: {:?}",
                        other.map(|v| v.len())
                    )),
                }
            }
            // getfattr, as a user would check a capability or a trusted.* attribute.
            for p in [fixtures::CAP_FILE, "/etc/hostname", HARDLINK_TRIPLE_LAST] {
                let dump = |m: &Mount| {
                    let out = Command::new("getfattr")
                        .args(["-h", "-d", "-m", "-", "-e", "hex"])
                        .arg(p.trim_start_matches('/'))
                        .current_dir(m.dir.path())
                        .output()
                        .unwrap();
                    String::from_utf8_lossy(&out.stdout).into_owned()
                };
                let (xa, xb) = (dump(&ma), dump(&mb));
                if xa != xb {
                    fail.push(format!("getfattr {p}: input {xa:?} output {xb:?}"));
                }
            }
            if ma.path(fixtures::CHAR_DEV).exists() {
                match fs::symlink_metadata(mb.path(fixtures::CHAR_DEV)) {
                    Ok(m) if m.rdev() == libc::makedev(5, 1) && m.gid() == 5 => {}
                    other => fail.push(format!("kernel: {}: {other:?}", fixtures::CHAR_DEV)),
                }
            }
        }
        (ra, rb) => {
            let why = [ra.err(), rb.err()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>();
            eprintln!(
                "NOTE {}: kernel checks skipped, loop mount impossible: {why:?}",
                img.name
            );
        }
    }
    fail
}

/// Injects `s` into `img` with the default (xz) and with `keep`; returns what is wrong.
fn inject_and_check(img: &Image, s: &Scripts) -> Vec<String> {
    let mut failures = Vec::new();
    for keep in [false, true] {
        let variant = format!("{} -> {}", img.name, if keep { "keep" } else { "xz" });
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("rootfs.img");
        let run = vxn(inject_args(&img.path, &out, s, keep), None);
        if !succeeded(&run) || run.stderr.contains("panicked") {
            failures.push(format!("{variant}: inject failed: {run:#?}"));
            continue;
        }
        let names: Vec<_> = fs::read_dir(out_dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if names != [OsString::from("rootfs.img")] {
            failures.push(format!("{variant}: output directory holds {names:?}"));
            continue;
        }
        // A new file as cp or mksquashfs would create it, not a temp file's private 0600.
        let mode = fs::metadata(&out).unwrap().permissions().mode() & 0o7777;
        if mode != 0o666 & !umask() {
            failures.push(format!(
                "{variant}: output mode {mode:04o}, expected {:04o} (0666 less the umask)",
                0o666 & !umask()
            ));
        }
        let mut problems = check_injection(img, &out, s, keep);
        // The engine keeps every inode number (docs/engine.md); mksquashfs would renumber, so
        // this is checked here and not in check_injection, which also judges mksquashfs.
        let dests = s.dests();
        sqfsdiff(
            &img.path,
            &out,
            "--inode-num",
            &dests,
            &parents(&dests),
            &mut problems,
        );
        failures.extend(problems.into_iter().map(|f| format!("{variant}: {f}")));
    }
    failures
}

fn assert_none(test: &str, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{test}: {} problem(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The seed's injection into one fixture image.
fn fidelity(comp: &'static str, block: (&'static str, u32)) {
    let test = format!("fidelity {comp} {}", block.0);
    if !can_run(&test, TOOLS) {
        return;
    }
    let tree = fixtures::build_tree();
    let img = fixtures::image(&tree, comp, block);
    assert_none(&test, inject_and_check(&img, &scripts()));
}

#[test]
fn fidelity_gzip_128k() {
    fidelity("gzip", fixtures::BLOCK_SIZES[0]);
}
#[test]
fn fidelity_gzip_1m() {
    fidelity("gzip", fixtures::BLOCK_SIZES[1]);
}
#[test]
fn fidelity_xz_128k() {
    fidelity("xz", fixtures::BLOCK_SIZES[0]);
}
#[test]
fn fidelity_xz_1m() {
    fidelity("xz", fixtures::BLOCK_SIZES[1]);
}
#[test]
fn fidelity_zstd_128k() {
    fidelity("zstd", fixtures::BLOCK_SIZES[0]);
}
#[test]
fn fidelity_zstd_1m() {
    fidelity("zstd", fixtures::BLOCK_SIZES[1]);
}

/// A named mksquashfs layout: compressor, block size (option and bytes), extra options.
type Layout<'a> = (&'a str, &'a str, (&'a str, u32), &'a [&'a str]);

/// Layouts mksquashfs makes with non-default options, and lz4: uncompressed tables and data,
/// no fragments, everything in fragments, no dedup, no xattrs, no export table, tiny blocks,
/// tail-end packing, no padding.
#[test]
fn fidelity_other_mksquashfs_layouts() {
    let test = "fidelity_other_mksquashfs_layouts";
    if !can_run(test, TOOLS) {
        return;
    }
    let tree = fixtures::build_tree();
    let s = scripts();
    let mut failures = Vec::new();
    let layouts: [Layout; 10] = [
        (
            "uncompressed",
            "gzip",
            K128,
            &["-noI", "-noId", "-noD", "-noF", "-noX"],
        ),
        ("no-fragments", "gzip", K128, &["-no-fragments"]),
        ("always-fragments", "xz", K128, &["-always-use-fragments"]),
        ("no-duplicates", "gzip", K128, &["-no-duplicates"]),
        ("no-xattrs", "zstd", K128, &["-no-xattrs"]),
        ("no-exports", "gzip", K128, &["-no-exports"]),
        ("4K-blocks", "gzip", ("4K", 4096), &[]),
        ("tailends", "gzip", K128, &["-tailends"]),
        ("nopad", "xz", K128, &["-nopad"]),
        ("lz4", "lz4", K128, &[]),
    ];
    for (name, comp, block, extra) in layouts {
        let path = tree.dir.path().join(format!("{name}.squashfs"));
        fixtures::mksquashfs(&tree.root, &path, comp, block.0, extra);
        let img = Image {
            name: name.to_string(),
            path,
            block_size: block.1,
        };
        failures.extend(inject_and_check(&img, &s));
    }
    assert_none(test, failures);
}

/// An image written by squashfs-tools-ng's gensquashfs, whose layout differs from mksquashfs's.
#[test]
fn fidelity_gensquashfs_image() {
    let test = "fidelity_gensquashfs_image";
    if !can_run(
        test,
        &[
            "gensquashfs",
            "sqfsdiff",
            "rdsquashfs",
            "unsquashfs",
            "getfattr",
        ],
    ) {
        return;
    }
    let tree = fixtures::build_tree();
    let path = tree.dir.path().join("gensquashfs.squashfs");
    run_ok(
        Command::new("gensquashfs")
            .args(["-q", "-k", "-x", "-e", "-c", "gzip", "-D"])
            .arg(&tree.root)
            .arg(&path)
            .env("SOURCE_DATE_EPOCH", fixtures::MKFS_TIME.to_string()),
    );
    let img = Image {
        name: "gensquashfs".into(),
        path,
        block_size: 128 * 1024,
    };
    // The engine re-encodes directories as mksquashfs does (an index wherever a listing spans
    // metadata blocks, extended inodes only where needed); gensquashfs encodes them otherwise.
    // Those are representation, not content: shown, not failed.
    let (encoding, rest): (Vec<String>, Vec<String>) = inject_and_check(&img, &scripts())
        .into_iter()
        .partition(|f| {
            f.contains("has an extended type")
                || (f.contains("unsquashfs -lln") && f.contains("\"drwx"))
                || (f.contains("rdsquashfs -s") && f.contains("\"Directory index\""))
        });
    for f in &encoding {
        eprintln!("NOTE {test}: directory encoding differs: {f}");
    }
    assert_none(test, rest);
}

/// Injecting into the big directory: new names before, inside and after its indexed entries,
/// so that the directory index must be rebuilt; every old name must still be found by the
/// kernel's indexed lookup.
#[test]
fn inject_into_the_indexed_directory() {
    let test = "inject_into_the_indexed_directory";
    if !can_run(test, TOOLS) {
        return;
    }
    let tree = fixtures::build_tree();
    let img = fixtures::image(&tree, "gzip", fixtures::BLOCK_SIZES[0]);
    let s = scripts_at(&[
        "/usr/share/big/entry-0150-aaa.sh",
        "/usr/share/big/0-first.sh",
        "/usr/share/big/zzz-last.sh",
        fixtures::OLD_INIT,
    ]);
    assert_none(test, inject_and_check(&img, &s));
}

/// Injected files of every size class: empty, one byte, exactly one block, several blocks with
/// a partial tail, incompressible data, and a run of zeros; at both block sizes.
#[test]
fn inject_files_of_every_size() {
    let test = "inject_files_of_every_size";
    if !can_run(test, TOOLS) {
        return;
    }
    let tree = fixtures::build_tree();
    let mut failures = Vec::new();
    for block in fixtures::BLOCK_SIZES {
        let img = fixtures::image(&tree, "zstd", block);
        let bs = block.1 as usize;
        let mut several = fixtures::noise(2 * bs, 21);
        several.extend_from_slice(&vec![b'x'; bs / 3]);
        let files = files_at(&[
            (fixtures::OLD_INIT, Vec::new()),
            ("/etc/one-byte", b"!".to_vec()),
            ("/etc/one-block", fixtures::noise(bs, 22)),
            ("/usr/lib/several-blocks", several),
            (
                "/usr/lib/big-noise",
                fixtures::noise(3 * 1024 * 1024 + 1, 23),
            ),
            ("/var/lib/zeros", vec![0u8; 2 * bs + 5]),
        ]);
        failures.extend(inject_and_check(&img, &files));
    }
    assert_none(test, failures);
}

#[test]
fn keep_preserves_compressor_options() {
    if !can_run("keep_preserves_compressor_options", TOOLS) {
        return;
    }
    let tree = fixtures::build_tree();
    let s = scripts();
    for (comp, opts) in [
        ("zstd", &["-Xcompression-level", "3"][..]),
        ("xz", &["-Xbcj", "x86", "-Xdict-size", "50%"][..]),
    ] {
        let input = tree.dir.path().join(format!("{comp}-opts.squashfs"));
        fixtures::mksquashfs(&tree.root, &input, comp, "128K", opts);
        let out = tree.dir.path().join(format!("{comp}-opts-out.squashfs"));
        let run = vxn(inject_args(&input, &out, &s, true), None);
        assert!(succeeded(&run), "{comp} {opts:?} keep: {run:#?}");
        let (a, b) = (superblock(&input), superblock(&out));
        assert!(a.compression.len() > 1, "{:?}", a.compression);
        assert_eq!(a.compression, b.compression, "{comp} {opts:?} with keep");
    }
}

/// What a correct injection looks like, made without our engine: the two files placed in the
/// tree as `install -m 0755 -o 0 -g 0` would, with the input's mkfs time as mtime, and the tree
/// imaged again by mksquashfs with `extra` options.
fn reference_output(tree: &Tree, s: &Scripts, name: &str, extra: &[&str]) -> PathBuf {
    for (p, bytes) in s.injected() {
        let host = tree.host(p);
        let _ = fs::remove_file(&host);
        fs::write(&host, bytes).unwrap();
        std::os::unix::fs::chown(&host, Some(0), Some(0)).unwrap();
        fs::set_permissions(&host, fs::Permissions::from_mode(0o755)).unwrap();
        fixtures::set_mtime(&host, i64::from(fixtures::MKFS_TIME));
    }
    let out = tree.dir.path().join(name);
    fixtures::mksquashfs(&tree.root, &out, "xz", "128K", extra);
    out
}

/// The oracle must accept a correct injection and reject each kind of loss it exists to catch;
/// otherwise a green fidelity test would mean nothing.
#[test]
fn oracle_accepts_a_reference_injection_and_rejects_losses() {
    if !can_run("oracle self-test", TOOLS) {
        return;
    }
    let (tree, img) = gzip_fixture();
    let s = scripts();
    let good = reference_output(&tree, &s, "reference.img", &[]);
    let problems = check_injection(&img, &good, &s, false);
    assert!(
        problems.is_empty(),
        "the oracle rejects mksquashfs's own injection:\n{}",
        problems.join("\n")
    );
    for (extra, expect) in [
        (&["-no-xattrs"][..], "rdsquashfs -x /etc/hostname"),
        (&["-no-exports"][..], "exportable via NFS"),
        (&["-all-root"][..], "unsquashfs -lln: /home/user"),
        (&["-b", "1M"][..], "block size"),
        (&["-all-time", "1"][..], "rdsquashfs -s /usr/lib/big-3m.bin"),
    ] {
        let bad = reference_output(&tree, &s, "lossy.img", extra);
        let problems = check_injection(&img, &bad, &s, false);
        assert!(
            problems.iter().any(|p| p.contains(expect)),
            "with mksquashfs {extra:?} the oracle should report {expect:?}, got:\n{}",
            problems.join("\n")
        );
    }
}

fn gzip_fixture() -> (Tree, Image) {
    let tree = fixtures::build_tree();
    let img = fixtures::image(&tree, "gzip", fixtures::BLOCK_SIZES[0]);
    (tree, img)
}

#[test]
fn two_runs_are_byte_identical() {
    if !can_run("two_runs_are_byte_identical", TOOLS) {
        return;
    }
    let (tree, img) = gzip_fixture();
    let s = scripts();
    let outs: Vec<PathBuf> = (0..3)
        .map(|i| tree.dir.path().join(format!("out-{i}.img")))
        .collect();
    for (i, out) in outs.iter().enumerate() {
        let mut args = inject_args(&img.path, out, &s, false);
        // The third run uses one thread: the output must not depend on parallelism either.
        if i == 2 {
            args.extend(["--jobs".into(), "1".into()]);
        }
        let run = vxn(args, None);
        assert!(succeeded(&run), "run {i}: {run:#?}");
    }
    assert_eq!(sha256(&outs[0]), sha256(&outs[1]), "two identical runs");
    assert_eq!(
        sha256(&outs[0]),
        sha256(&outs[2]),
        "default jobs vs --jobs 1"
    );
    for keep_run in 0..2 {
        let out = tree.dir.path().join(format!("keep-{keep_run}.img"));
        let run = vxn(inject_args(&img.path, &out, &s, true), None);
        assert!(succeeded(&run), "keep run {keep_run}: {run:#?}");
    }
    assert_eq!(
        sha256(&tree.dir.path().join("keep-0.img")),
        sha256(&tree.dir.path().join("keep-1.img")),
        "two identical keep runs"
    );
}

#[test]
fn source_date_epoch_sets_injected_mtime_and_mkfs_time() {
    if !can_run("source_date_epoch", TOOLS) {
        return;
    }
    let (tree, img) = gzip_fixture();
    let s = scripts();
    let sde = 1_234_567_890u32;
    let out = tree.dir.path().join("sde.img");
    let run = vxn(
        inject_args(&img.path, &out, &s, false),
        Some(&sde.to_string()),
    );
    assert!(succeeded(&run), "{run:#?}");
    assert_eq!(mkfs_time(&out), sde, "output mkfs time");
    for p in [fixtures::OLD_INIT, fixtures::COMMON_INIT] {
        let (f, _) = stat(&out, p);
        let mtime = f.get("Last modified").cloned().unwrap_or_default();
        assert!(mtime.ends_with(&format!("({sde})")), "{p}: {mtime}");
    }
    // Files not injected keep their own mtimes.
    let (a, _) = stat(&img.path, fixtures::OWNED_1000);
    let (b, _) = stat(&out, fixtures::OWNED_1000);
    assert_eq!(a.get("Last modified"), b.get("Last modified"));
}

#[test]
fn replacing_a_hardlinked_file_leaves_its_other_links_alone() {
    if !can_run("replacing_a_hardlinked_file", TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("vxn-init.sh"), fixtures::OLD_INIT_CONTENT).unwrap();
    fs::hard_link(root.join("vxn-init.sh"), root.join("etc/init-a")).unwrap();
    fs::hard_link(root.join("vxn-init.sh"), root.join("etc/init-b")).unwrap();
    std::os::unix::fs::chown(root.join("vxn-init.sh"), Some(1000), Some(1000)).unwrap();
    fixtures::lsetxattr(&root.join("etc/init-a"), "user.kept", b"yes");
    let input = dir.path().join("in.img");
    fixtures::mksquashfs(&root, &input, "gzip", "128K", &[]);
    let out = dir.path().join("out.img");
    let s = scripts();
    let run = vxn(inject_args(&input, &out, &s, false), None);
    assert!(succeeded(&run), "{run:#?}");

    let cat = |p: &str| run_ok(Command::new("rdsquashfs").arg("-c").arg(p).arg(&out)).stdout;
    assert_eq!(cat("/vxn-init.sh"), s.init_bytes());
    assert_eq!(cat("/etc/init-a"), fixtures::OLD_INIT_CONTENT);
    assert_eq!(cat("/etc/init-b"), fixtures::OLD_INIT_CONTENT);
    let (new, new_ino) = stat(&out, "/vxn-init.sh");
    let (a, a_ino) = stat(&out, "/etc/init-a");
    let (b, b_ino) = stat(&out, "/etc/init-b");
    assert_eq!(
        new.get("Hard link count").map(String::as_str),
        Some("1"),
        "{new:?}"
    );
    assert_eq!(new.get("UID").map(String::as_str), Some("0"));
    assert_eq!(new.get("Access").map(String::as_str), Some("0755"));
    assert_eq!(a_ino, b_ino, "the remaining links share one inode");
    assert_ne!(a_ino, new_ino);
    assert_eq!(
        a.get("Hard link count").map(String::as_str),
        Some("2"),
        "{a:?}"
    );
    assert_eq!(a.get("UID").map(String::as_str), Some("1000"));
    assert_eq!(a, b);
    assert_eq!(xattrs(&out, "/etc/init-b").trim(), "user.kept=yes");
    assert_eq!(xattrs(&out, "/vxn-init.sh").trim(), "");
}

/// An image in which nothing is owned by root: the injected files' 0:0 must be added to the id
/// table, and every other owner must stay.
#[test]
fn injecting_adds_root_to_an_id_table_without_it() {
    if !can_run("injecting_adds_root_to_an_id_table_without_it", TOOLS) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/a"), b"a\n").unwrap();
    let input = dir.path().join("in.img");
    fixtures::mksquashfs(
        &root,
        &input,
        "gzip",
        "128K",
        &["-force-uid", "1000", "-force-gid", "1001"],
    );
    let out = dir.path().join("out.img");
    let s = scripts();
    let run = vxn(inject_args(&input, &out, &s, false), None);
    assert!(succeeded(&run), "{run:#?}");
    let (a, b) = (listing(&input), listing(&out));
    for (p, line) in &b {
        let owner = line.split_whitespace().nth(1).unwrap_or_default();
        let want = if s.dests().contains(&p.as_str()) {
            "0/0"
        } else {
            "1000/1001"
        };
        assert_eq!(owner, want, "{p}: {line}");
    }
    assert_eq!(a.len() + 2, b.len());
    assert_eq!(superblock(&input).ids, "2");
    assert_eq!(superblock(&out).ids, "3");
}

// ---- bad input -------------------------------------------------------------------------------

/// A small valid image and the scripts, for the error cases to spoil.
struct Bad {
    dir: tempfile::TempDir,
    image: PathBuf,
    scripts: Scripts,
}

fn bad_setup(comp: &str) -> Bad {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("etc/hostname"), b"vxn\n").unwrap();
    fs::write(root.join("usr/bin/tool"), fixtures::noise(300 * 1024, 9)).unwrap();
    fixtures::lsetxattr(&root.join("etc/hostname"), "user.a", b"1");
    let image = dir.path().join("in.img");
    fixtures::mksquashfs(&root, &image, comp, "128K", &[]);
    Bad {
        dir,
        image,
        scripts: scripts(),
    }
}

/// Runs an injection that must fail and checks that it failed cleanly: non-zero exit, a
/// message naming `names`, no panic, nothing at OUTPUT and nothing else left beside it.
fn expect_clean_failure(case: &str, args: Vec<OsString>, out: &Path, names: &str) -> Vec<String> {
    let run = vxn(args, None);
    let mut fail = Vec::new();
    if succeeded(&run) {
        fail.push(format!("{case}: exited 0"));
    }
    if run.code.is_none() {
        fail.push(format!("{case}: killed by a signal"));
    }
    if run.stderr.contains("panicked") {
        fail.push(format!("{case}: panicked"));
    }
    if !run.stderr.contains(names) {
        fail.push(format!("{case}: message does not name {names:?}"));
    }
    if out.exists() {
        fail.push(format!("{case}: {} exists", out.display()));
    }
    if let Ok(rd) = fs::read_dir(out.parent().unwrap()) {
        let left: Vec<_> = rd.map(|e| e.unwrap().file_name()).collect();
        if !left.is_empty() {
            fail.push(format!("{case}: left {left:?} beside the output"));
        }
    }
    if !fail.is_empty() {
        fail.push(format!("{case}: {run:#?}"));
    }
    fail
}

/// A fresh, empty output directory per case.
fn out_path(bad: &Bad, case: &str) -> PathBuf {
    let d = bad
        .dir
        .path()
        .join(format!("out-{}", case.replace(' ', "-")));
    fs::create_dir_all(&d).unwrap();
    d.join("rootfs.img")
}

fn report(fail: Vec<String>) {
    assert!(fail.is_empty(), "{}", fail.join("\n"));
}

#[test]
fn bad_input_image_files() {
    if !can_run("bad_input_image_files", TOOLS) {
        return;
    }
    let bad = bad_setup("gzip");
    let mut fail = Vec::new();

    let missing = bad.dir.path().join("no-such.img");
    let out = out_path(&bad, "missing");
    fail.extend(expect_clean_failure(
        "missing input",
        inject_args(&missing, &out, &bad.scripts, false),
        &out,
        &missing.display().to_string(),
    ));

    let text = bad.dir.path().join("not-squashfs.img");
    fs::write(
        &text,
        b"this is a text file, not a filesystem image\n".repeat(100),
    )
    .unwrap();
    let out = out_path(&bad, "not squashfs");
    fail.extend(expect_clean_failure(
        "not a squashfs",
        inject_args(&text, &out, &bad.scripts, false),
        &out,
        &text.display().to_string(),
    ));

    let empty = bad.dir.path().join("empty.img");
    fs::write(&empty, b"").unwrap();
    let out = out_path(&bad, "empty");
    fail.extend(expect_clean_failure(
        "empty input",
        inject_args(&empty, &out, &bad.scripts, false),
        &out,
        &empty.display().to_string(),
    ));

    let dir_input = bad.dir.path().join("root");
    let out = out_path(&bad, "input is dir");
    fail.extend(expect_clean_failure(
        "input is a directory",
        inject_args(&dir_input, &out, &bad.scripts, false),
        &out,
        &dir_input.display().to_string(),
    ));
    report(fail);
}

#[test]
fn bad_input_unsupported_compressors() {
    if !can_run("bad_input_unsupported_compressors", TOOLS) {
        return;
    }
    let mut fail = Vec::new();
    for comp in ["lzo", "lzma"] {
        let bad = bad_setup(comp);
        for keep in [false, true] {
            let case = format!("{comp} image (keep: {keep})");
            let out = out_path(&bad, &case);
            fail.extend(expect_clean_failure(
                &case,
                inject_args(&bad.image, &out, &bad.scripts, keep),
                &out,
                &bad.image.display().to_string(),
            ));
        }
    }
    report(fail);
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Whether unsquashfs itself rejects an image: proof that a corruption is real.
fn unsquashfs_rejects(image: &Path) -> bool {
    let dest = image.with_extension("unsquashed");
    let st = Command::new("unsquashfs")
        .args(["-no-progress", "-d"])
        .arg(&dest)
        .arg(image)
        .output()
        .unwrap();
    let _ = fs::remove_dir_all(&dest);
    !st.status.success()
}

#[test]
fn bad_input_truncated_images() {
    if !can_run("bad_input_truncated_images", TOOLS) {
        return;
    }
    let bad = bad_setup("gzip");
    let bytes = fs::read(&bad.image).unwrap();
    let used = read_u64(&bytes, 40) as usize;
    let mut fail = Vec::new();
    for cut in [4, 50, 96, 200, used / 2, used - 300, used - 9, used - 1] {
        let img = bad.dir.path().join(format!("cut-{cut}.img"));
        fs::write(&img, &bytes[..cut]).unwrap();
        let case = format!("truncated at {cut} of {used}");
        let out = out_path(&bad, &case);
        fail.extend(expect_clean_failure(
            &case,
            inject_args(&img, &out, &bad.scripts, false),
            &out,
            &img.display().to_string(),
        ));
    }
    report(fail);
}

#[test]
fn bad_input_corrupt_tables() {
    if !can_run("bad_input_corrupt_tables", TOOLS) {
        return;
    }
    let bad = bad_setup("gzip");
    let good = fs::read(&bad.image).unwrap();
    let len = good.len() as u64;
    let put = |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    let garble = |b: &mut Vec<u8>, at: usize| {
        for x in &mut b[at..at + 24] {
            *x ^= 0xA5;
        }
    };
    type Spoil = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Spoil)> = vec![
        ("version 3.1", Box::new(|b| b[28] = 3)),
        (
            "root inode beyond the inode table",
            Box::new(move |b| put(b, 32, 0x7fff_0000_0000)),
        ),
        (
            "id table start beyond the end",
            Box::new(move |b| put(b, 48, len + 4096)),
        ),
        (
            "id table pointer beyond the end",
            Box::new(move |b| {
                let at = read_u64(b, 48) as usize;
                put(b, at, len * 3)
            }),
        ),
        (
            "inode table bytes garbled",
            Box::new(move |b| {
                let at = read_u64(b, 64) as usize + 6;
                garble(b, at)
            }),
        ),
        (
            "directory table bytes garbled",
            Box::new(move |b| {
                let at = read_u64(b, 72) as usize + 6;
                garble(b, at)
            }),
        ),
        (
            "fragment table pointer beyond the end",
            Box::new(move |b| {
                let at = read_u64(b, 80) as usize;
                put(b, at, len * 5)
            }),
        ),
        (
            "xattr id table start beyond the end",
            Box::new(move |b| put(b, 56, len * 7)),
        ),
        (
            "inode table start after the directory table",
            Box::new(move |b| {
                let dir = read_u64(b, 72);
                put(b, 64, dir + 100)
            }),
        ),
    ];
    let mut fail = Vec::new();
    for (i, (case, spoil)) in cases.iter().enumerate() {
        let mut b = good.clone();
        spoil(&mut b);
        let img = bad.dir.path().join(format!("corrupt-{i}.img"));
        fs::write(&img, &b).unwrap();
        assert!(
            unsquashfs_rejects(&img),
            "test bug: unsquashfs accepts the image with '{case}', so it is no corruption"
        );
        let out = out_path(&bad, &format!("corrupt {i}"));
        fail.extend(expect_clean_failure(
            case,
            inject_args(&img, &out, &bad.scripts, false),
            &out,
            &img.display().to_string(),
        ));
    }
    report(fail);
}

#[test]
fn bad_injections() {
    if !can_run("bad_injections", TOOLS) {
        return;
    }
    let bad = bad_setup("gzip");
    let mut fail = Vec::new();
    let add = |src: &Path, dest: &str| {
        let mut a = OsString::from(src.as_os_str());
        a.push(":");
        a.push(dest);
        a
    };
    let args = |out: &Path, spec: OsString| -> Vec<OsString> {
        vec![
            "inject".into(),
            bad.image.clone().into(),
            "--output".into(),
            out.into(),
            "--add".into(),
            spec,
        ]
    };

    let missing_src = bad.dir.path().join("no-such-script.sh");
    let out = out_path(&bad, "missing src");
    fail.extend(expect_clean_failure(
        "missing SRC",
        args(&out, add(&missing_src, "/vxn-init.sh")),
        &out,
        &missing_src.display().to_string(),
    ));

    let out = out_path(&bad, "missing parent");
    fail.extend(expect_clean_failure(
        "missing DEST parent",
        args(&out, add(bad.scripts.init(), "/no/such/dir/vxn-init.sh")),
        &out,
        "/no/such/dir",
    ));

    let out = out_path(&bad, "dest is dir");
    fail.extend(expect_clean_failure(
        "DEST is a directory",
        args(&out, add(bad.scripts.init(), "/usr/bin")),
        &out,
        "/usr/bin",
    ));

    let out = out_path(&bad, "parent is file");
    fail.extend(expect_clean_failure(
        "DEST parent is a file",
        args(&out, add(bad.scripts.init(), "/etc/hostname/x.sh")),
        &out,
        "/etc/hostname",
    ));
    report(fail);
}

/// A usrmerged rootfs (/sbin -> usr/sbin, /bin -> usr/bin, /lib64 -> /usr/lib, ...): each DEST
/// lands where the seed's `install -m 0755 SRC rootfs-unsquash/DEST` puts it, through relative
/// and absolute links alike and never outside the image, and nothing else changes (owners,
/// xattrs, hardlinks, the links themselves), as the fidelity tests' oracles see it; a rerun
/// writes the same bytes.
#[test]
fn usrmerged_destinations_land_where_install_puts_them() {
    if !can_run("usrmerged_destinations_land_where_install_puts_them", TOOLS) {
        return;
    }
    let tree = fixtures::usrmerged_tree();
    let img = fixtures::image(&tree, "gzip", K128);
    // (DEST as given, where install puts it)
    let dests = [
        ("/sbin/init", "/usr/sbin/init"),
        ("/bin/wall", "/usr/bin/wall"),
        ("/lib64/vxn-helper.sh", "/usr/lib/vxn-helper.sh"),
        ("/up/vxn-up.sh", "/usr/share/vxn-up.sh"),
    ];
    let given = scripts_at(&dests.map(|(dest, _)| dest));
    let landed = Scripts {
        _dir: tempfile::tempdir().unwrap(),
        files: given
            .files
            .iter()
            .zip(dests)
            .map(|((_, source, bytes), (_, at))| (at.to_string(), source.clone(), bytes.clone()))
            .collect(),
    };
    let mut failures = Vec::new();
    for keep in [false, true] {
        let variant = format!(
            "usrmerged {} -> {}",
            img.name,
            if keep { "keep" } else { "xz" }
        );
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("rootfs.img");
        let run = vxn(inject_args(&img.path, &out, &given, keep), None);
        if !succeeded(&run) || run.stderr.contains("panicked") {
            failures.push(format!("{variant}: inject failed: {run:#?}"));
            continue;
        }
        for (dest, at) in dests {
            if !run
                .stderr
                .contains(&format!("{dest} goes to {at}, through the symlink"))
            {
                failures.push(format!(
                    "{variant}: the log does not say where {dest} went: {run:#?}"
                ));
            }
        }
        let mut problems = check_injection(&img, &out, &landed, keep);
        let at = landed.dests();
        sqfsdiff(
            &img.path,
            &out,
            "--inode-num",
            &at,
            &parents(&at),
            &mut problems,
        );
        let again = out_dir.path().join("again.img");
        let rerun = vxn(inject_args(&img.path, &again, &given, keep), None);
        if !succeeded(&rerun) || fs::read(&again).ok() != fs::read(&out).ok() {
            problems.push(format!("a rerun does not write the same bytes: {rerun:#?}"));
        }
        failures.extend(problems.into_iter().map(|f| format!("{variant}: {f}")));
    }
    assert_none("usrmerged injection", failures);
}

/// A DEST below a dangling link, a link loop or a link to a file is refused cleanly, and the
/// message names DEST and the link.
#[test]
fn usrmerged_bad_links_name_dest_and_link() {
    if !can_run("usrmerged_bad_links_name_dest_and_link", TOOLS) {
        return;
    }
    let tree = fixtures::usrmerged_tree();
    let img = fixtures::image(&tree, "gzip", K128);
    let script = scripts();
    let mut fail = Vec::new();
    for (case, dest, link) in [
        (
            "dangling link",
            "/broken/vxn-init.sh",
            "/broken -> usr/nowhere",
        ),
        ("link loop", "/loop-a/vxn-init.sh", "/loop-a -> loop-b"),
        (
            "link to a file",
            "/tofile/vxn-init.sh",
            "/tofile -> etc/hostname",
        ),
        (
            "missing below a link",
            "/sbin/no/vxn-init.sh",
            "/sbin -> usr/sbin",
        ),
    ] {
        for needle in [format!("cannot inject {dest} into"), link.to_string()] {
            let out_dir = tempfile::tempdir().unwrap();
            let out = out_dir.path().join("rootfs.img");
            let mut add = OsString::from(script.init().as_os_str());
            add.push(":");
            add.push(dest);
            let args = vec![
                "inject".into(),
                img.path.clone().into(),
                "--output".into(),
                out.clone().into(),
                "--add".into(),
                add,
            ];
            fail.extend(expect_clean_failure(case, args, &out, &needle));
        }
    }
    report(fail);
}
