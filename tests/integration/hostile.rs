//! Hostile squashfs images run through the real binary: truncations, bit flips in the superblock
//! and in every table, directory loops, inodes claiming huge sizes, bad names, out-of-range
//! superblock fields.
//!
//! Each run is watched from outside the process, so a panic, an abort or a hang cannot hide:
//! it gets an address-space limit (a runaway allocation then fails inside the tool instead of
//! swapping the machine) and is killed if it outlives a generous timeout, which is a hang
//! detector, not a speed target. A run must end in exit 1 with one error line naming the input,
//! no "panicked", and nothing left in the output directory. Bit flips may also yield a valid
//! image; then the run must succeed and leave exactly the output. `vxn-blobs check` reads every
//! image too, as the rootfs.img of a blob directory, under the same watch: it must end with a
//! report (exit 0, or exit 1 with its one error line), and list a corrupt image as such.
//!
//! The images come from mksquashfs (with -noI -noD -noF -noX where a table has to be patched
//! in place, as metadata blocks are then stored uncompressed) and from the engine's built-in
//! sample, and are taken apart here with just enough of the format to find each table.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vxn_blobs::demo::{self, DEMO_INITRAMFS};
use vxn_blobs::kernel::KernelArch;

use crate::bounded::{self, Limits};
use crate::util::{have_tool, names, TestDir};

const BLOCK_SIZE: u32 = 4096;
const PAYLOAD: &[u8] = b"#!/bin/sh\necho hostile\n";

/// A place to run hostile images: the payload to inject and an output directory that must stay
/// empty after every failed run.
struct Bench {
    dir: TestDir,
    root: PathBuf,
    input: PathBuf,
    out_dir: PathBuf,
    payload: PathBuf,
    /// A vxn/x86_64 directory whose rootfs.img each image becomes for `check`.
    blobs: PathBuf,
    /// Whether the last `check` run listed the image as corrupt.
    check_said_corrupt: bool,
    /// Runs so far, to alternate between the two output compressions.
    runs: usize,
    /// Runs that ended in a (clean) error.
    rejected: usize,
    problems: Vec<String>,
}

impl Bench {
    fn new() -> Bench {
        let dir = TestDir::new();
        let root = dir.path().to_path_buf();
        let payload = root.join("vxn-init.sh");
        fs::write(&payload, PAYLOAD).unwrap();
        let out_dir = root.join("out");
        fs::create_dir(&out_dir).unwrap();
        let blobs = root.join("vxn/x86_64");
        fs::create_dir_all(&blobs).unwrap();
        demo::write_fake_kernel(&blobs.join("bzImage"), KernelArch::X86).unwrap();
        demo::write_initramfs(&blobs.join("initramfs.cpio.gz"), &DEMO_INITRAMFS, 0).unwrap();
        Bench {
            blobs,
            check_said_corrupt: false,
            input: root.join("input.img"),
            out_dir,
            payload,
            root,
            dir,
            runs: 0,
            rejected: 0,
            problems: Vec::new(),
        }
    }

    /// Like [`Bench::check`] for an image that must be refused for the reason `why`.
    fn refuses(&mut self, case: &str, image: &[u8], why: &str) {
        let line = self.check(case, image, true);
        if !line.contains(why) {
            self.problems
                .push(format!("{case}: expected the error to say {why:?}: {line}"));
        }
    }

    /// Injects into `image` and checks the outcome. `must_fail`: the image is corrupt in a way
    /// the tool has to notice; otherwise (bit flips) a clean success is accepted too. Returns
    /// the error line, if any.
    fn check(&mut self, case: &str, image: &[u8], must_fail: bool) -> String {
        fs::write(&self.input, image).unwrap();
        let output = self.out_dir.join("rootfs.img");
        let add = format!("{}:/vxn-init.sh", self.payload.display());
        // Alternate: xz output decompresses every data block, keep copies them raw.
        let compression = if self.runs % 2 == 0 { "xz" } else { "keep" };
        self.runs += 1;
        let command = self.dir.command(
            &[
                "inject",
                self.input.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
                "--add",
                &add,
                "--compression",
                compression,
                "--jobs",
                "2",
            ],
            &[],
        );
        let ended = bounded::run(command, Limits::default());
        let left = names(&self.out_dir);
        let input = self.input.display().to_string();
        let problem = if ended.code == Some(0) && !ended.stderr.contains("panicked") {
            if must_fail {
                Some("accepted a corrupt image".to_string())
            } else if left != ["rootfs.img"] {
                Some(format!("succeeded but the output directory holds {left:?}"))
            } else {
                None
            }
        } else {
            self.rejected += 1;
            match ended.unclean_failure(&[&input]) {
                None if !left.is_empty() => {
                    Some(format!("failed but left {left:?} in the output directory"))
                }
                other => other,
            }
        };
        if let Some(what) = problem {
            self.problems
                .push(format!("{case} (--compression {compression}): {what}"));
        }
        for name in left {
            let _ = fs::remove_file(self.out_dir.join(name));
        }
        self.check_blobs(case, must_fail);
        ended.error_lines().join("\n")
    }

    /// Runs `vxn-blobs check --json` on a blob directory holding the input as rootfs.img.
    fn check_blobs(&mut self, case: &str, must_fail: bool) {
        self.check_said_corrupt = false;
        fs::copy(&self.input, self.blobs.join("rootfs.img")).unwrap();
        let blobs = self.blobs.display().to_string();
        let command = self.dir.command(&["check", &blobs, "--json"], &[]);
        let ended = bounded::run(command, Limits::default());
        let unclean = match ended.code {
            Some(0) if !ended.hung && !ended.stderr.contains("panicked") => None,
            _ => ended.unclean_failure(&["would not boot"]),
        };
        let problem = unclean.or_else(|| {
            let report: serde_json::Value = match serde_json::from_str(&ended.stdout) {
                Ok(report) => report,
                Err(e) => return Some(format!("printed no JSON report ({e}): {}", ended.stdout)),
            };
            let corrupt = report["findings"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["code"] == "rootfs-format"));
            self.check_said_corrupt = corrupt;
            (must_fail && !corrupt)
                .then(|| format!("did not report the image as corrupt: {report}"))
        });
        if let Some(what) = problem {
            self.problems.push(format!("{case} (check): {what}"));
        }
    }

    /// Fails the test with every problem found, after all cases ran.
    fn finish(self, what: &str) {
        assert!(
            self.problems.is_empty(),
            "{what}: {} of {} runs went wrong:\n{}",
            self.problems.len(),
            self.runs,
            self.problems.join("\n")
        );
        eprintln!(
            "{what}: {} runs, {} rejected cleanly",
            self.runs, self.rejected
        );
    }
}

/// Deterministic bytes (xorshift), so that data blocks do not compress away.
pub(crate) fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// The tree every mksquashfs image here is made from: the features the engine must carry over
/// (owners, a hardlink, a symlink, a fifo, a device, a sparse file, xattrs, full blocks and a
/// fragment), a nested directory for the loop cases and short names for the name cases.
fn make_tree(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for d in ["bin", "etc", "dev", "d/e"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::write(dir.join("bin/busybox"), noise(9000, 7)).unwrap();
    fs::set_permissions(dir.join("bin/busybox"), fs::Permissions::from_mode(0o4755)).unwrap();
    std::os::unix::fs::symlink("busybox", dir.join("bin/sh")).unwrap();
    fs::write(dir.join("etc/hostname"), "vxn\n").unwrap();
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    // Only root may give a file away; without it the tree has one owner fewer.
    let _ = std::os::unix::fs::chown(dir.join("etc/passwd"), Some(1000), Some(1000));
    fs::hard_link(dir.join("etc/passwd"), dir.join("etc/passwd-")).unwrap();
    fs::write(dir.join("f"), noise(5000, 11)).unwrap();
    for name in ["z", "zz", "zzz"] {
        fs::write(dir.join(name), name).unwrap();
    }
    fs::File::create(dir.join("sparse"))
        .unwrap()
        .set_len(3 * u64::from(BLOCK_SIZE))
        .unwrap();
    let c = |p: &Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: plain libc calls on NUL-terminated paths; failures are checked or tolerated.
    unsafe {
        assert_eq!(libc::mkfifo(c(&dir.join("dev/fifo")).as_ptr(), 0o600), 0);
        // Only root may make device nodes; the tree is complete enough without one.
        libc::mknod(
            c(&dir.join("dev/console")).as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(5, 1),
        );
        for (file, name, value) in [
            ("f", "user.vxn", &b"hostile"[..]),
            ("etc/hostname", "user.long", &[b'x'; 300][..]),
        ] {
            let name = std::ffi::CString::new(name).unwrap();
            libc::lsetxattr(
                c(&dir.join(file)).as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            );
        }
    }
}

/// Builds the test tree with mksquashfs and returns the image's bytes.
fn mksquashfs(scratch: &Path, name: &str, extra: &[&str]) -> Vec<u8> {
    let tree = scratch.join("tree");
    if !tree.exists() {
        make_tree(&tree);
    }
    let image = scratch.join(name);
    let status = Command::new("mksquashfs")
        .arg(&tree)
        .arg(&image)
        .args(["-noappend", "-quiet", "-no-progress", "-b", "4096"])
        .args(["-mkfs-time", "1700000000", "-all-time", "1700000000"])
        .args(extra)
        .stdout(Stdio::null())
        .status()
        .expect("run mksquashfs");
    assert!(status.success(), "mksquashfs {extra:?} failed");
    fs::read(image).unwrap()
}

fn sample_image(scratch: &Path) -> Vec<u8> {
    let path = scratch.join("sample.img");
    vxn_blobs::squashfs::write_sample_image(&path, 1_700_000_000).unwrap();
    fs::read(path).unwrap()
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Superblock field offsets.
mod sb {
    pub const INODE_COUNT: usize = 4;
    pub const BLOCK_SIZE: usize = 12;
    pub const FRAGMENT_COUNT: usize = 16;
    pub const COMPRESSOR: usize = 20;
    pub const BLOCK_LOG: usize = 22;
    pub const ID_COUNT: usize = 26;
    pub const VERSION_MAJOR: usize = 28;
    pub const ROOT_INODE: usize = 32;
    pub const BYTES_USED: usize = 40;
    pub const ID_TABLE: usize = 48;
    pub const XATTR_TABLE: usize = 56;
    pub const INODE_TABLE: usize = 64;
    pub const DIRECTORY_TABLE: usize = 72;
    pub const FRAGMENT_TABLE: usize = 80;
    pub const EXPORT_TABLE: usize = 88;
}

/// Where each table of an image lies: (name, [start, end) in the file), found through the
/// superblock. Lookup arrays are included with the metadata blocks they point at.
fn tables(img: &[u8]) -> Vec<(&'static str, usize, usize)> {
    let at = |field| u64_at(img, field);
    let mut out = vec![(
        "inode table",
        at(sb::INODE_TABLE) as usize,
        at(sb::DIRECTORY_TABLE) as usize,
    )];
    // Each indexed table's blocks start where its lookup array's first entry points and end
    // with its lookup array.
    let lookup = |field, entries: u64, entry: u64| {
        let table = at(field);
        if table == u64::MAX {
            return None;
        }
        let blocks = (entries * entry).div_ceil(8192);
        let first = u64_at(img, table as usize);
        Some((first as usize, (table + blocks * 8) as usize))
    };
    let inodes = u64::from(u32_at(img, sb::INODE_COUNT));
    let mut starts = Vec::new();
    for (name, field, count, size) in [
        (
            "fragment table",
            sb::FRAGMENT_TABLE,
            u64::from(u32_at(img, sb::FRAGMENT_COUNT)),
            16,
        ),
        ("export table", sb::EXPORT_TABLE, inodes, 8),
        (
            "id table",
            sb::ID_TABLE,
            u64::from(u16_at(img, sb::ID_COUNT)),
            4,
        ),
    ] {
        if let Some((start, end)) = lookup(field, count, size) {
            out.push((name, start, end));
            starts.push(start);
        }
    }
    let xattr = at(sb::XATTR_TABLE);
    if xattr != u64::MAX {
        let kv_start = u64_at(img, xattr as usize) as usize;
        let sets = u64::from(u32_at(img, xattr as usize + 8));
        out.push((
            "xattr table",
            kv_start,
            xattr as usize + 16 + (sets * 16).div_ceil(8192) as usize * 8,
        ));
        starts.push(kv_start);
    }
    let dir_end = starts
        .into_iter()
        .filter(|s| *s as u64 > at(sb::DIRECTORY_TABLE))
        .min()
        .unwrap_or(at(sb::BYTES_USED) as usize);
    out.push(("directory table", at(sb::DIRECTORY_TABLE) as usize, dir_end));
    out
}

/// The uncompressed contents of the single metadata block at `pos` (the small tables of the
/// -noI images fit in one block each): (first byte, end).
fn plain_block(img: &[u8], pos: usize) -> (usize, usize) {
    let header = u16_at(img, pos);
    assert!(header & 0x8000 != 0, "the block at {pos} is compressed");
    let len = usize::from(header & 0x7fff);
    (pos + 2, pos + 2 + len)
}

/// A directory entry found in an uncompressed directory table, with the file positions of the
/// fields the cases patch.
#[derive(Debug, Clone)]
struct Entry {
    name: Vec<u8>,
    /// Position of the run header this entry is under.
    header: usize,
    /// Position of the entry itself (offset u16, delta i16, type u16, name size u16, name).
    at: usize,
}

impl Entry {
    fn inode_ref(&self, img: &[u8]) -> (u32, u16) {
        (u32_at(img, self.header + 4), u16_at(img, self.at))
    }
}

/// Every entry of every listing, in table order.
fn entries(img: &[u8]) -> Vec<Entry> {
    let (mut at, end) = plain_block(img, u64_at(img, sb::DIRECTORY_TABLE) as usize);
    let mut out = Vec::new();
    while at < end {
        let header = at;
        let count = u32_at(img, at) as usize + 1;
        at += 12;
        for _ in 0..count {
            let size = usize::from(u16_at(img, at + 6)) + 1;
            out.push(Entry {
                name: img[at + 8..at + 8 + size].to_vec(),
                header,
                at,
            });
            at += 8 + size;
        }
    }
    out
}

fn entry(img: &[u8], name: &str) -> Entry {
    entries(img)
        .into_iter()
        .find(|e| e.name == name.as_bytes())
        .unwrap_or_else(|| panic!("no entry {name}"))
}

/// File position of the inode an entry (or the root reference) points at.
fn inode_at(img: &[u8], (block, offset): (u32, u16)) -> usize {
    let table = u64_at(img, sb::INODE_TABLE) as usize;
    let (data, end) = plain_block(img, table + block as usize);
    let at = data + usize::from(offset);
    assert!(at < end);
    at
}

fn root_ref(img: &[u8]) -> (u32, u16) {
    let r = u64_at(img, sb::ROOT_INODE);
    ((r >> 16) as u32, r as u16)
}

/// Points an entry at another inode: its run header gets the inode's block, the entry its
/// offset (each patched entry here is the only one under its header).
fn repoint(img: &mut [u8], e: &Entry, (block, offset): (u32, u16)) {
    put_u32(img, e.header + 4, block);
    put_u16(img, e.at, offset);
}

fn skip_without_mksquashfs() -> bool {
    !have_tool("mksquashfs")
}

#[test]
fn the_limits_leave_room_for_a_real_injection() {
    // The control: without it, a limit too tight would make every case below "fail cleanly".
    if skip_without_mksquashfs() {
        return;
    }
    let mut bench = Bench::new();
    for extra in [
        &["-comp", "gzip"][..],
        &["-noI", "-noD", "-noF", "-noX"][..],
    ] {
        let img = mksquashfs(&bench.root, "control.img", extra);
        for _ in 0..2 {
            bench.check(&format!("intact image {extra:?}"), &img, false);
            assert_eq!(bench.rejected, 0, "{:?}", bench.problems);
            assert!(
                !bench.check_said_corrupt,
                "check called an intact image corrupt"
            );
        }
    }
    let img = sample_image(&bench.root);
    bench.check("intact sample image", &img, false);
    assert_eq!(bench.rejected, 0, "{:?}", bench.problems);
    assert!(
        !bench.check_said_corrupt,
        "check called the sample image corrupt"
    );
    bench.finish("control");
}

#[test]
fn truncated_images() {
    let mut bench = Bench::new();
    let mut images = vec![("sample", sample_image(&bench.root))];
    if !skip_without_mksquashfs() {
        images.push((
            "gzip",
            mksquashfs(&bench.root, "gzip.img", &["-comp", "gzip", "-nopad"]),
        ));
        images.push((
            "uncompressed tables",
            mksquashfs(&bench.root, "plain.img", &["-noI", "-noD", "-noF", "-noX"]),
        ));
    }
    for (what, img) in images {
        let used = u64_at(&img, sb::BYTES_USED) as usize;
        // Every table boundary and its neighbours, and a spread of offsets in between.
        let mut cuts: Vec<usize> = vec![0, 1, 3, 4, 5, 50, 95, 96, 97, 98];
        for (_, start, end) in tables(&img) {
            for c in [start, end] {
                cuts.extend([c.saturating_sub(1), c, c + 1, c + 2]);
            }
        }
        cuts.extend((0..used).step_by(used / 40 + 1));
        cuts.retain(|c| *c < used);
        cuts.sort_unstable();
        cuts.dedup();
        for cut in cuts {
            let piece = &img[..cut];
            bench.check(&format!("{what} image cut at {cut}"), piece, true);
            // The same cut with the superblock claiming it: the tables now point past the end.
            if cut >= 96 {
                let mut patched = piece.to_vec();
                put_u64(&mut patched, sb::BYTES_USED, cut as u64);
                bench.check(
                    &format!("{what} image cut at {cut}, bytes_used patched"),
                    &patched,
                    true,
                );
            }
        }
    }
    bench.finish("truncation");
}

#[test]
fn bit_flips_in_the_superblock() {
    let mut bench = Bench::new();
    let img = if skip_without_mksquashfs() {
        sample_image(&bench.root)
    } else {
        mksquashfs(&bench.root, "gzip.img", &["-comp", "gzip"])
    };
    for byte in 0..96 {
        for bit in 0..8 {
            let mut flipped = img.clone();
            flipped[byte] ^= 1 << bit;
            bench.check(
                &format!("superblock byte {byte} bit {bit} flipped"),
                &flipped,
                false,
            );
        }
    }
    bench.finish("superblock bit flips");
}

#[test]
fn bit_flips_in_every_table() {
    if skip_without_mksquashfs() {
        return;
    }
    let mut bench = Bench::new();
    for (what, extra) in [
        ("gzip", &["-comp", "gzip"][..]),
        ("uncompressed tables", &["-noI", "-noD", "-noF", "-noX"][..]),
    ] {
        let img = mksquashfs(&bench.root, "flip.img", extra);
        let found = tables(&img);
        for name in [
            "inode table",
            "directory table",
            "fragment table",
            "id table",
            "xattr table",
            "export table",
        ] {
            assert!(
                found.iter().any(|t| t.0 == name),
                "the {what} image has no {name}"
            );
        }
        for (table, start, end) in found {
            // Up to 48 flips spread over the table, each in another bit.
            let step = ((end - start) / 48).max(1);
            for (i, at) in (start..end).step_by(step).enumerate() {
                let mut flipped = img.clone();
                flipped[at] ^= 1 << (i * 3 % 8);
                bench.check(
                    &format!("{what} image, {table}: byte {at} bit {} flipped", i * 3 % 8),
                    &flipped,
                    false,
                );
            }
        }
    }
    bench.finish("table bit flips");
}

#[test]
fn out_of_range_superblock_fields() {
    let mut bench = Bench::new();
    let img = sample_image(&bench.root);
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let mut patch = |what: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut bad = img.clone();
        f(&mut bad);
        cases.push((what.to_string(), bad));
    };
    for size in [0u32, 1, 4095, 3 * 4096, 1 << 21, u32::MAX] {
        patch(&format!("block size {size}"), &|b| {
            put_u32(b, sb::BLOCK_SIZE, size)
        });
    }
    for log in [0u16, 11, 21, 0xffff] {
        patch(&format!("block_log {log}"), &|b| {
            put_u16(b, sb::BLOCK_LOG, log)
        });
    }
    for id in [0u16, 2, 3, 7, 0xffff] {
        patch(&format!("compressor id {id}"), &|b| {
            put_u16(b, sb::COMPRESSOR, id)
        });
    }
    for (major, minor) in [(3u16, 0u16), (4, 1), (5, 0), (0xffff, 0xffff)] {
        patch(&format!("version {major}.{minor}"), &|b| {
            put_u16(b, sb::VERSION_MAJOR, major);
            put_u16(b, sb::VERSION_MAJOR + 2, minor);
        });
    }
    patch("no magic", &|b| b[0] = b'x');
    for count in [0u32, 0x7fff_ffff, u32::MAX] {
        patch(&format!("inode count {count}"), &|b| {
            put_u32(b, sb::INODE_COUNT, count)
        });
    }
    patch("fragment count without a fragment table", &|b| {
        put_u32(b, sb::FRAGMENT_COUNT, 1);
        put_u64(b, sb::FRAGMENT_TABLE, u64::MAX);
    });
    patch("id count 0", &|b| put_u16(b, sb::ID_COUNT, 0));
    patch("bytes used beyond the file", &|b| {
        put_u64(b, sb::BYTES_USED, u64::MAX)
    });
    for field in [
        sb::ID_TABLE,
        sb::INODE_TABLE,
        sb::DIRECTORY_TABLE,
        sb::FRAGMENT_TABLE,
        sb::EXPORT_TABLE,
        sb::XATTR_TABLE,
    ] {
        for value in [0u64, 95, u64::MAX - 1, 1 << 40] {
            patch(&format!("table pointer at byte {field} = {value}"), &|b| {
                put_u64(b, field, value)
            });
        }
    }
    for value in [u64::MAX, 0xffff_ffff_0000, 0x1fff] {
        patch(&format!("root inode reference {value:#x}"), &|b| {
            put_u64(b, sb::ROOT_INODE, value)
        });
    }
    for (what, bad) in cases {
        // Table pointers moved onto other valid tables can describe a readable image, so only
        // the fields that cannot be right must be refused; all must end cleanly.
        let must_fail = !what.starts_with("table pointer");
        bench.check(&what, &bad, must_fail);
    }
    bench.finish("superblock fields");
}

/// An image with every table stored uncompressed, so that cases can patch them in place.
fn plain_image(scratch: &Path) -> Vec<u8> {
    mksquashfs(scratch, "plain.img", &["-noI", "-noD", "-noF", "-noX"])
}

#[test]
fn directory_loops() {
    if skip_without_mksquashfs() {
        return;
    }
    let mut bench = Bench::new();
    let img = plain_image(&bench.root);
    let e = entry(&img, "e");
    let d = entry(&img, "d");
    let f = entry(&img, "f");

    let mut to_root = img.clone();
    repoint(&mut to_root, &e, root_ref(&img));
    bench.check("/d/e is the root directory", &to_root, true);

    let mut to_parent = img.clone();
    repoint(&mut to_parent, &e, d.inode_ref(&img));
    bench.check("/d/e is /d", &to_parent, true);

    // /d/e's inode takes the root's listing, which names /d again.
    let mut shared = img.clone();
    let root = inode_at(&img, root_ref(&img));
    let e_inode = inode_at(&img, e.inode_ref(&img));
    assert_eq!(u16_at(&img, root), 1, "the root is a basic directory");
    assert_eq!(u16_at(&img, e_inode), 1, "/d/e is a basic directory");
    // Basic directory inode: start_block u32 at 16, file_size u16 at 24, offset u16 at 26.
    shared[e_inode + 16..e_inode + 20].copy_from_slice(&img[root + 16..root + 20]);
    shared[e_inode + 24..e_inode + 28].copy_from_slice(&img[root + 24..root + 28]);
    bench.check("/d/e lists the root's entries", &shared, true);

    let mut file_as_dir = img.clone();
    repoint(&mut file_as_dir, &e, f.inode_ref(&img));
    bench.check(
        "/d/e is a directory entry for a file inode",
        &file_as_dir,
        true,
    );

    // The tree then holds only /d's part of the image; it must not be written back as if
    // it were the whole image.
    let mut subtree = img.clone();
    let (block, offset) = d.inode_ref(&img);
    put_u64(
        &mut subtree,
        sb::ROOT_INODE,
        u64::from(block) << 16 | u64::from(offset),
    );
    bench.check("the root reference points at /d", &subtree, true);

    bench.finish("directory loops");
}

#[test]
fn inodes_claiming_huge_sizes_or_counts() {
    if skip_without_mksquashfs() {
        return;
    }
    let mut bench = Bench::new();
    let img = plain_image(&bench.root);
    let inode_of = |name: &str| inode_at(&img, entry(&img, name).inode_ref(&img));
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    let mut patch = |what: &str, f: &dyn Fn(&mut Vec<u8>)| {
        let mut bad = img.clone();
        f(&mut bad);
        cases.push((what.to_string(), bad));
    };

    // /z: a basic file (type 2): blocks_start u32 16, fragment 20, offset 24, size 28.
    let z = inode_of("z");
    assert_eq!(u16_at(&img, z), 2, "/z is a basic file inode");
    for size in [u32::MAX, 1 << 30, 40 * BLOCK_SIZE] {
        patch(&format!("/z claims {size} bytes"), &|b| {
            put_u32(b, z + 28, size)
        });
    }
    patch("/z's fragment index is huge", &|b| {
        put_u32(b, z + 20, 1 << 30)
    });
    patch("/z's fragment index is one past the table", &|b| {
        let count = u32_at(b, sb::FRAGMENT_COUNT);
        put_u32(b, z + 20, count)
    });

    // /f: an extended file (type 9, it has an xattr): blocks_start u64 16, size u64 24,
    // sparse u64 32, nlink 40, fragment 44, offset 48, xattr 52, then the block sizes.
    let f = inode_of("f");
    assert_eq!(u16_at(&img, f), 9, "/f is an extended file inode");
    for size in [u64::MAX, 1 << 40, 1 << 33] {
        patch(&format!("/f claims {size} bytes"), &|b| {
            put_u64(b, f + 24, size)
        });
    }
    patch("/f's blocks start at u64::MAX", &|b| {
        put_u64(b, f + 16, u64::MAX - 1)
    });
    patch("/f's first block claims 16 MiB", &|b| {
        put_u32(b, f + 56, 0x00ff_ffff)
    });
    patch("/f's xattr index is huge", &|b| {
        put_u32(b, f + 52, 0x7fff_ffff)
    });

    // /d: a basic directory (it lists /d/e): start_block u32 16, nlink 20, file_size u16 24,
    // offset u16 26.
    let d = inode_of("d");
    assert_eq!(u16_at(&img, d), 1, "/d is a basic directory inode");
    for size in [0u16, 2, 0xffff] {
        patch(&format!("/d's listing claims {size} bytes"), &|b| {
            put_u16(b, d + 24, size)
        });
    }
    patch("/d's listing starts past the table", &|b| {
        put_u32(b, d + 16, 1 << 30)
    });
    patch("/d's listing offset is beyond its block", &|b| {
        put_u16(b, d + 26, 0xfff0)
    });

    // /bin/sh: a basic symlink: nlink u32 16, target size u32 20.
    let sh = inode_of("sh");
    assert_eq!(u16_at(&img, sh), 3, "/bin/sh is a basic symlink");
    for size in [0u32, 4097, u32::MAX] {
        patch(&format!("/bin/sh's target claims {size} bytes"), &|b| {
            put_u32(b, sh + 20, size)
        });
    }

    // Header fields of any inode.
    patch("/z has an unknown type", &|b| put_u16(b, z, 15));
    patch("/z's owner index is outside the id table", &|b| {
        put_u16(b, z + 4, 0xffff)
    });
    patch("/z has inode number 0", &|b| put_u32(b, z + 12, 0));
    patch("/z has a number beyond the inode count", &|b| {
        put_u32(b, z + 12, u32::MAX)
    });
    let zz = inode_of("zz");
    patch("/z and /zz share an inode number", &|b| {
        let n = u32_at(b, zz + 12);
        put_u32(b, z + 12, n)
    });

    for (what, bad) in cases {
        bench.check(&what, &bad, true);
    }
    // Positions inside file data, which the engine copies without interpreting: such an image
    // stays as corrupt as it was (reading that file fails), but the run must end cleanly.
    let mut tail = img.clone();
    put_u32(&mut tail, z + 24, BLOCK_SIZE - 1);
    bench.check("/z's tail lies beyond its fragment's data", &tail, false);
    let mut unused = img.clone();
    put_u32(&mut unused, z + 16, u32::MAX);
    bench.check(
        "/z (no full blocks) has its blocks past the end",
        &unused,
        false,
    );
    bench.finish("huge sizes and counts");
}

#[test]
fn names_that_could_escape_or_are_malformed() {
    if skip_without_mksquashfs() {
        return;
    }
    let mut bench = Bench::new();
    let img = plain_image(&bench.root);
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    for (name, bad, what) in [
        ("z", &b"."[..], "a name \".\""),
        ("zz", &b".."[..], "a name \"..\""),
        ("zzz", &b"z/z"[..], "a name holding \"/\""),
        ("zzz", &b"/zz"[..], "an absolute name"),
        ("z", &b"\0"[..], "a name that is one NUL byte"),
        ("zzz", &b"z\0z"[..], "a name holding NUL"),
    ] {
        let e = entry(&img, name);
        let mut patched = img.clone();
        patched[e.at + 8..e.at + 8 + bad.len()].copy_from_slice(bad);
        cases.push((what, patched));
    }
    // Name lengths that do not fit: beyond the listing, beyond 256 bytes.
    let e = entry(&img, "zzz");
    let mut long = img.clone();
    put_u16(&mut long, e.at + 6, 0xffff);
    cases.push(("a name claiming 65536 bytes", long));
    let mut unsorted = img.clone();
    let zz = entry(&img, "zz");
    unsorted[zz.at + 8..zz.at + 10].copy_from_slice(b"aa");
    cases.push(("names out of order", unsorted));
    let mut count = img.clone();
    put_u32(&mut count, e.header, 0xffff_ffff);
    cases.push(("a run header claiming 2^32 entries", count));
    for (what, bad) in cases {
        bench.check(what, &bad, true);
    }
    bench.finish("names");
}

#[test]
fn a_gzip_bomb_as_initramfs() {
    use std::io::Write;
    let dir = TestDir::new();
    let fx = crate::util::Fixture::new(dir.path(), crate::util::Arch::X86_64);
    // A well-formed newc header announcing a 4 GiB - 1 file, followed by 600 MiB of zeros
    // that gzip packs into well under a megabyte.
    let mut header = String::from("070701");
    for field in [1, 0o100644, 0, 0, 1, 0, 0xffff_ffffu32, 0, 0, 0, 0, 5, 0] {
        header.push_str(&format!("{field:08x}"));
    }
    header.push_str("init\0");
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(fx.input("initramfs")).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(header.as_bytes()).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..600 {
        gz.write_all(&zeros).unwrap();
    }
    gz.finish().unwrap();

    let ended = bounded::run(
        dir.command(&["compile", "--spec", &fx.spec_arg()], &[]),
        Limits::default(),
    );
    let initramfs = fx.input("initramfs").display().to_string();
    if let Some(why) = ended.unclean_failure(&[&initramfs, "gzip bomb"]) {
        panic!("a gzip bomb as initramfs: {why}");
    }
    assert_eq!(names(&fx.build_dir()), [".vxn-blobs.lock"]);
}

/// A squashfs image assembled from raw table streams, for structures mksquashfs never writes:
/// the inode and directory tables in uncompressed metadata blocks, a one-entry id table, no
/// data, fragments, export or xattr table.
struct Crafted {
    inodes: Vec<u8>,
    dirs: Vec<u8>,
    xattrs: Option<CraftedXattrs>,
}

/// An xattr table for [`Crafted`].
struct CraftedXattrs {
    /// The key/value stream.
    kv: Vec<u8>,
    /// The id entries: (stream position of the set's first pair, pair count).
    sets: Vec<(usize, u32)>,
}

const METADATA: usize = 8192;

impl Crafted {
    fn new() -> Crafted {
        Crafted {
            inodes: Vec::new(),
            dirs: Vec::new(),
            xattrs: None,
        }
    }

    /// The (block, offset) reference of a position in an uncompressed table stream: blocks are
    /// 8192 bytes plus a 2-byte header on disk.
    fn reference(pos: usize) -> (u32, u16) {
        (
            (pos / METADATA * (METADATA + 2)) as u32,
            (pos % METADATA) as u16,
        )
    }

    /// An extended directory inode (type 8), so that listings may exceed 64 KiB.
    fn dir_inode(&mut self, number: u32, listing_at: usize, listing_len: usize) -> usize {
        let at = self.inodes.len();
        let (block, offset) = Crafted::reference(listing_at);
        let b = &mut self.inodes;
        for v in [8u16, 0o755, 0, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [0u32, number, 2, listing_len as u32 + 3, block, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        at
    }

    /// An empty basic file inode (type 2).
    fn file_inode(&mut self, number: u32) -> usize {
        let at = self.inodes.len();
        let b = &mut self.inodes;
        for v in [2u16, 0o644, 0, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for v in [0u32, number, 0, u32::MAX, 0, 0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        at
    }

    /// Appends a listing of (name, type, inode position, inode number), sorted by name;
    /// returns where it starts and its length.
    fn listing(&mut self, entries: &[(String, u16, usize, u32)]) -> (usize, usize) {
        let start = self.dirs.len();
        let mut i = 0;
        while i < entries.len() {
            let block = Crafted::reference(entries[i].2).0;
            let run: Vec<_> = entries[i..]
                .iter()
                .take(256)
                .take_while(|e| Crafted::reference(e.2).0 == block)
                .collect();
            let base = run[0].3;
            let d = &mut self.dirs;
            d.extend_from_slice(&(run.len() as u32 - 1).to_le_bytes());
            d.extend_from_slice(&block.to_le_bytes());
            d.extend_from_slice(&base.to_le_bytes());
            for (name, kind, at, number) in &run {
                d.extend_from_slice(&Crafted::reference(*at).1.to_le_bytes());
                d.extend_from_slice(&((*number as i64 - base as i64) as i16).to_le_bytes());
                d.extend_from_slice(&kind.to_le_bytes());
                d.extend_from_slice(&(name.len() as u16 - 1).to_le_bytes());
                d.extend_from_slice(name.as_bytes());
            }
            i += run.len();
        }
        (start, self.dirs.len() - start)
    }

    fn metadata_blocks(stream: &[u8], out: &mut Vec<u8>) {
        for chunk in stream.chunks(METADATA) {
            out.extend_from_slice(&(chunk.len() as u16 | 0x8000).to_le_bytes());
            out.extend_from_slice(chunk);
        }
    }

    fn image(&self, root_at: usize, inode_count: u32) -> Vec<u8> {
        let mut img = vec![0u8; 96];
        Crafted::metadata_blocks(&self.inodes, &mut img);
        let dir_table = img.len();
        Crafted::metadata_blocks(&self.dirs, &mut img);
        let mut xattr_table = u64::MAX;
        if let Some(CraftedXattrs { kv, sets }) = &self.xattrs {
            let kv_start = img.len();
            Crafted::metadata_blocks(kv, &mut img);
            let mut ids = Vec::new();
            for &(pos, count) in sets {
                let (block, offset) = Crafted::reference(pos);
                ids.extend_from_slice(&(u64::from(block) << 16 | u64::from(offset)).to_le_bytes());
                ids.extend_from_slice(&count.to_le_bytes());
                ids.extend_from_slice(&0u32.to_le_bytes());
            }
            let mut lookup = Vec::new();
            for chunk in ids.chunks(METADATA) {
                lookup.extend_from_slice(&(img.len() as u64).to_le_bytes());
                Crafted::metadata_blocks(chunk, &mut img);
            }
            xattr_table = img.len() as u64;
            img.extend_from_slice(&(kv_start as u64).to_le_bytes());
            img.extend_from_slice(&(sets.len() as u32).to_le_bytes());
            img.extend_from_slice(&0u32.to_le_bytes());
            img.extend_from_slice(&lookup);
        }
        let id_block = img.len();
        Crafted::metadata_blocks(&0u32.to_le_bytes(), &mut img);
        let id_table = img.len();
        img.extend_from_slice(&(id_block as u64).to_le_bytes());
        let (block, offset) = Crafted::reference(root_at);
        let b = &mut img;
        b[0..4].copy_from_slice(b"hsqs");
        put_u32(b, sb::INODE_COUNT, inode_count);
        put_u32(b, 8, 1_700_000_000);
        put_u32(b, sb::BLOCK_SIZE, BLOCK_SIZE);
        put_u16(b, sb::COMPRESSOR, 1);
        put_u16(b, sb::BLOCK_LOG, 12);
        // Inodes, data and fragments stored uncompressed, no fragments.
        put_u16(b, 24, 0x0001 | 0x0002 | 0x0008 | 0x0010);
        put_u16(b, sb::ID_COUNT, 1);
        put_u16(b, sb::VERSION_MAJOR, 4);
        put_u64(
            b,
            sb::ROOT_INODE,
            u64::from(block) << 16 | u64::from(offset),
        );
        let used = b.len() as u64;
        put_u64(b, sb::BYTES_USED, used);
        put_u64(b, sb::ID_TABLE, id_table as u64);
        put_u64(b, sb::XATTR_TABLE, xattr_table);
        put_u64(b, sb::INODE_TABLE, 96);
        put_u64(b, sb::DIRECTORY_TABLE, dir_table as u64);
        put_u64(b, sb::FRAGMENT_TABLE, u64::MAX);
        put_u64(b, sb::EXPORT_TABLE, u64::MAX);
        img
    }
}

/// `dirs` directories in the root that all share one listing of `names` hardlinks to a single
/// file: a well-formed image never shares listings, and believing one makes the tree
/// dirs x names entries big.
fn shared_listing(dirs: u32, names: u32) -> Vec<u8> {
    let mut c = Crafted::new();
    let root_size = 40;
    let sub_at = |i: u32| root_size + 40 * i as usize;
    let file_at = sub_at(dirs);
    let file_number = dirs + 2;
    let shared: Vec<_> = (0..names)
        .map(|i| (format!("n{i:07}"), 2u16, file_at, file_number))
        .collect();
    let (shared_at, shared_len) = c.listing(&shared);
    let subdirs: Vec<_> = (0..dirs)
        .map(|i| (format!("d{i:07}"), 1u16, sub_at(i), i + 2))
        .collect();
    let (root_listing_at, root_listing_len) = c.listing(&subdirs);
    c.dir_inode(1, root_listing_at, root_listing_len);
    for i in 0..dirs {
        c.dir_inode(i + 2, shared_at, shared_len);
    }
    c.file_inode(file_number);
    c.image(0, file_number)
}

/// `count` root entries pointing into a run of bytes that parses, at every fourth position, as
/// a file inode claiming ~4 GiB (a million block sizes): each such inode overlaps the next.
fn overlapping_inodes(count: u32, run: usize) -> Vec<u8> {
    let mut c = Crafted::new();
    let root_size = 40;
    let entries: Vec<_> = (0..count)
        .map(|i| {
            let at = root_size + 4 * i as usize;
            (format!("f{i:07}"), 2u16, at, i + 2)
        })
        .collect();
    let (listing_at, listing_len) = c.listing(&entries);
    c.dir_inode(1, listing_at, listing_len);
    // Type 2 and 0xffff alternating: every u32 field reads 0xffff0002.
    for _ in 0..run / 4 {
        c.inodes.extend_from_slice(&[2, 0, 0xff, 0xff]);
    }
    c.image(0, count + 1)
}

/// An image with one file and an xattr table of `sets` attribute sets, set i walking
/// `pairs - i` of the same `pairs` pairs (so no two ids are alike), each pair a "user.a"
/// whose value is stored once, out of line.
fn overlapping_xattr_sets(sets: u32, pairs: u32) -> Vec<u8> {
    let mut c = Crafted::new();
    let (at, len) = c.listing(&[("f".to_string(), 2, 40, 2)]);
    c.dir_inode(1, at, len);
    c.file_inode(2);
    // The shared value at stream position 0: size 1, "v".
    let mut kv = vec![1, 0, 0, 0, b'v'];
    let first = kv.len();
    for _ in 0..pairs {
        // Type user | out of line, name "a", value size 8, reference to position 0.
        kv.extend_from_slice(&[0, 1, 1, 0, b'a', 8, 0, 0, 0]);
        kv.extend_from_slice(&0u64.to_le_bytes());
    }
    c.xattrs = Some(CraftedXattrs {
        kv,
        sets: (0..sets).map(|i| (first, pairs - i)).collect(),
    });
    c.image(0, 2)
}

#[test]
fn crafted_tables_that_overlap() {
    let mut bench = Bench::new();
    // The control: the builder makes images the tool reads.
    let mut c = Crafted::new();
    let (at, len) = c.listing(&[("f".to_string(), 2, 40, 2)]);
    c.dir_inode(1, at, len);
    c.file_inode(2);
    bench.check("a crafted image with one file", &c.image(0, 2), false);
    assert_eq!(bench.rejected, 0, "{:?}", bench.problems);

    let shared = "directory listings overlap";
    bench.refuses(
        "three directories sharing one listing",
        &shared_listing(3, 3),
        shared,
    );
    // Believed, this one names 36 million entries: it used to abort on the address-space
    // limit ("memory allocation failed").
    bench.refuses(
        "6000 directories sharing a listing of 6000 names",
        &shared_listing(6000, 6000),
        shared,
    );
    let overlap = "inodes overlap";
    bench.refuses(
        "two file inodes overlapping, each claiming 4 GiB",
        &overlapping_inodes(2, 6 << 20),
        overlap,
    );
    // Believed, these take 1.2 GB of block lists: it used to abort on the limit.
    bench.refuses(
        "300 file inodes overlapping, each claiming 4 GiB",
        &overlapping_inodes(300, 6 << 20),
        overlap,
    );
    let sets = "attribute sets overlap";
    bench.check(
        "a crafted image with one attribute set",
        &overlapping_xattr_sets(1, 3),
        false,
    );
    bench.refuses(
        "two attribute sets sharing pairs",
        &overlapping_xattr_sets(2, 3),
        sets,
    );
    // Believed, these record 90 million out-of-line references (1.4 GB): it used to abort on
    // the limit.
    bench.refuses(
        "3000 attribute sets sharing 30000 pairs",
        &overlapping_xattr_sets(3000, 30000),
        sets,
    );
    bench.finish("crafted overlapping tables");
}
