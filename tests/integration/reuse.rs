//! Rebuilds that reuse the previous rootfs.img's xz blocks: after every kind of change the
//! output must be byte for byte what a cold compile of the same inputs writes, reuse must
//! really happen where it can, and nothing that does not match its record may be trusted.
//!
//! Each step compiles twice: into the build_dir that holds the previous build (incremental)
//! and into a fresh one (cold). The rootfs is the feature tree of fixtures.rs (owners, xattrs,
//! hardlinks, a sparse file, duplicates, fragments, a big directory) imaged by mksquashfs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bounded;
use crate::fixtures::{build_tree, can_run, mksquashfs, noise, text, Tree};
use crate::util::{Arch, Fixture, Run, TestDir};

const RECORD: &str = "rootfs.img.vxn-reuse";

/// A compile fixture whose rootfs input is an image of a tree that the test edits.
struct Rebuilds {
    dir: TestDir,
    fx: Fixture,
    tree: Tree,
    colds: usize,
}

impl Rebuilds {
    /// The fixture for `test`, or `None` (after saying why) where mksquashfs or root is missing.
    fn start(test: &str) -> Option<Rebuilds> {
        if !can_run(test, &["mksquashfs"]) {
            return None;
        }
        let dir = TestDir::new();
        let fx = Fixture::new(dir.path(), Arch::X86_64);
        Some(Rebuilds {
            dir,
            fx,
            tree: build_tree(),
            colds: 0,
        })
    }

    fn host(&self, image_path: &str) -> PathBuf {
        self.tree.host(image_path)
    }

    /// Images the tree as the rootfs input.
    fn image(&self, comp: &str, block: &str) {
        mksquashfs(&self.tree.root, &self.fx.input("rootfs"), comp, block, &[]);
    }

    fn outputs(build_dir: &Path) -> (Vec<u8>, Option<Vec<u8>>) {
        (
            fs::read(build_dir.join("rootfs.img")).unwrap(),
            fs::read(build_dir.join(RECORD)).ok(),
        )
    }

    /// Compiles into the build_dir of the earlier steps and into a fresh one; asserts that
    /// rootfs.img and its record come out byte-identical; returns the incremental run.
    #[track_caller]
    fn compile_both(&mut self, step: &str) -> Run {
        let run = self.fx.compile(&self.dir);
        assert!(run.stdout.contains("compile: built"), "{step}: {run:#?}");
        self.colds += 1;
        let cold_dir = format!("cold-{}", self.colds);
        fs::create_dir(self.dir.path().join(&cold_dir)).unwrap();
        self.fx.set("build_dir", cold_dir.clone().into());
        let cold = self.fx.compile(&self.dir);
        self.fx.set("build_dir", "build".into());
        if cold.stderr.contains(" blocks from ") {
            assert_eq!(
                reuse_counts(&cold).0,
                0,
                "{step}: a cold compile reused blocks"
            );
        }
        let (ours, our_record) = Rebuilds::outputs(&self.fx.build_dir());
        let (theirs, their_record) = Rebuilds::outputs(&self.dir.path().join(&cold_dir));
        assert!(
            ours == theirs,
            "{step}: rootfs.img differs from the cold compile's"
        );
        assert!(
            our_record == their_record,
            "{step}: the reuse record differs from the cold compile's"
        );
        run
    }
}

/// (blocks copied, blocks transcoded) from the engine's log line.
pub fn reuse_counts(run: &Run) -> (u64, u64) {
    let sources = crate::util::block_sources(run);
    (sources.copied, sources.total)
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

#[test]
fn rebuilds_after_a_change_are_byte_identical_to_cold_builds() {
    let Some(mut r) = Rebuilds::start("rebuilds_after_a_change_are_byte_identical_to_cold_builds")
    else {
        return;
    };
    r.image("gzip", "128K");
    let first = r.compile_both("first compile");
    assert!(
        first.stderr.contains("not reusing") && reuse_counts(&first).0 == 0,
        "{first:#?}"
    );

    // Every block of a file rewritten at the same size differs: only those are compressed.
    write(&r.host("/usr/lib/several.bin"), &noise(300 * 1024 + 17, 99));
    r.image("gzip", "128K");
    let (copied, total) = reuse_counts(&r.compile_both("a file rewritten"));
    assert!(copied > 0 && copied < total, "{copied} of {total}");

    // A config file changed (its fragment changes) and a big file grown by a block.
    write(&r.host("/etc/services"), &text(3100, "services v2"));
    let mut big = fs::read(r.host("/usr/lib/big-3m.bin")).unwrap();
    big.extend_from_slice(&text(131_072, "grown"));
    write(&r.host("/usr/lib/big-3m.bin"), &big);
    r.image("gzip", "128K");
    let (copied, total) = reuse_counts(&r.compile_both("a config file changed, a file grown"));
    assert!(copied > 0 && copied < total, "{copied} of {total}");

    // Files added: one of whole blocks, one small enough for a fragment.
    write(&r.host("/usr/lib/added.bin"), &noise(400 * 1024, 7));
    write(&r.host("/etc/added.conf"), b"added = yes\n");
    r.image("gzip", "128K");
    let (copied, total) = reuse_counts(&r.compile_both("files added"));
    assert!(copied > 0 && copied < total, "{copied} of {total}");

    // Files removed: what is left was all in the previous image.
    fs::remove_file(r.host("/usr/lib/added.bin")).unwrap();
    fs::remove_file(r.host("/usr/share/dup-1")).unwrap();
    fs::remove_file(r.host("/usr/bin/su")).unwrap();
    r.image("gzip", "128K");
    let (copied, total) = reuse_counts(&r.compile_both("files removed"));
    assert!(copied > 0, "{copied} of {total}");

    // The rootfs unchanged but the spec changed (another mkfs time): every block is copied.
    r.fx.set("source_date_epoch", (crate::util::EPOCH + 1).into());
    let (copied, total) = reuse_counts(&r.compile_both("only the spec changed"));
    assert_eq!(copied, total);
}

#[test]
fn a_new_block_size_or_compressor_reuses_nothing_and_is_still_right() {
    let Some(mut r) =
        Rebuilds::start("a_new_block_size_or_compressor_reuses_nothing_and_is_still_right")
    else {
        return;
    };
    r.image("gzip", "128K");
    r.compile_both("first compile");
    for (comp, block) in [("gzip", "64K"), ("zstd", "64K"), ("gzip", "128K")] {
        r.image(comp, block);
        let run = r.compile_both(&format!("{comp} at {block}"));
        assert_eq!(reuse_counts(&run).0, 0, "{comp} {block}: {run:#?}");
        assert!(run.stderr.contains("other settings"), "{run:#?}");
    }
    // An xz rootfs is copied, not transcoded: there is nothing to record, and the record of
    // the previous rootfs.img goes with it.
    r.image("xz", "128K");
    r.compile_both("an xz rootfs");
    assert!(!r.fx.build_dir().join(RECORD).exists());
    r.image("gzip", "128K");
    r.compile_both("gzip again");
    r.fx.set("compression", "keep".into());
    r.compile_both("compression keep");
    assert!(!r.fx.build_dir().join(RECORD).exists());
}

#[test]
fn a_damaged_previous_output_or_record_is_not_trusted() {
    let Some(mut r) = Rebuilds::start("a_damaged_previous_output_or_record_is_not_trusted") else {
        return;
    };
    let base = r.dir.path().join("base.sq");
    let changed = r.dir.path().join("changed.sq");
    r.image("gzip", "128K");
    fs::copy(r.fx.input("rootfs"), &base).unwrap();
    write(&r.host("/usr/lib/several.bin"), &noise(300 * 1024 + 17, 42));
    r.image("gzip", "128K");
    fs::copy(r.fx.input("rootfs"), &changed).unwrap();

    let flip = |path: &Path, at: fn(usize) -> usize| {
        let mut bytes = fs::read(path).unwrap();
        let i = at(bytes.len());
        bytes[i] ^= 0x40;
        fs::write(path, bytes).unwrap();
    };
    let cut = |path: &Path| {
        let bytes = fs::read(path).unwrap();
        fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
    };
    // (what, the damage, the file it is done to, what the log must say)
    type Damage<'a> = (&'a str, &'a dyn Fn(&Path), &'a str, &'a str);
    let damages: [Damage; 5] = [
        (
            "rootfs.img truncated",
            &cut,
            "rootfs.img",
            "not the image its record describes",
        ),
        (
            "a byte of rootfs.img's data flipped",
            &|p| flip(p, |len| len / 3),
            "rootfs.img",
            "not the image its record describes",
        ),
        (
            "a byte of the record flipped",
            &|p| flip(p, |len| len / 2),
            RECORD,
            "damaged",
        ),
        ("the record truncated", &cut, RECORD, "damaged"),
        (
            "the record gone",
            &|p| fs::remove_file(p).unwrap(),
            RECORD,
            "there is no record",
        ),
    ];
    for (what, damage, name, why) in damages {
        fs::copy(&base, r.fx.input("rootfs")).unwrap();
        r.fx.compile(&r.dir);
        damage(&r.fx.build_dir().join(name));
        fs::copy(&changed, r.fx.input("rootfs")).unwrap();
        let run = r.compile_both(what);
        assert_eq!(reuse_counts(&run).0, 0, "{what}: {run:#?}");
        assert!(run.stderr.contains(why), "{what}: {run:#?}");
    }
}

/// Something other than a file planted where the record or the previous image is looked for
/// is not waited on (a fifo would block an open or a read forever) and is replaced.
#[test]
fn a_fifo_planted_as_the_record_or_the_previous_image_does_not_hang_compile() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    for name in [RECORD, "rootfs.img"] {
        fx.compile(&dir);
        let planted = fx.build_dir().join(name);
        fs::remove_file(&planted).unwrap();
        let path = std::ffi::CString::new(planted.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string; mkfifo has no other preconditions.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o644) }, 0);
        squashfs_edit(&fx);
        let ended = bounded::run(
            dir.command(&["compile", "--spec", &fx.spec_arg()], &[]),
            bounded::Limits::default(),
        );
        assert!(!ended.hung && ended.code == Some(0), "{name}: {ended:?}");
        assert!(
            ended.stderr.contains("not a regular file"),
            "{name}: {ended:?}"
        );
        assert!(fs::metadata(&planted).unwrap().is_file(), "{name}");
    }
}

/// A new rootfs input (the sample image with another mkfs time), so that compile runs again.
fn squashfs_edit(fx: &Fixture) {
    let stamp = fs::metadata(fx.input("rootfs")).unwrap().len() as u32;
    vxn_blobs::squashfs::write_sample_image(&fx.input("rootfs"), crate::util::EPOCH + stamp)
        .unwrap();
}

#[test]
fn inject_reuse_keeps_a_record_beside_its_output() {
    let Some(r) = Rebuilds::start("inject_reuse_keeps_a_record_beside_its_output") else {
        return;
    };
    let out = r.dir.path().join("out.img");
    let record = r.dir.path().join("out.img.vxn-reuse");
    let input = r.fx.input("rootfs");
    let add = format!("{}:/vxn-init.sh", r.fx.inject_source(0).display());
    let inject = |output: &Path, extra: &[&str]| {
        let mut args = vec![
            "inject".to_string(),
            input.display().to_string(),
            "--output".into(),
            output.display().to_string(),
            "--add".into(),
            add.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        r.dir.run(&args).ok()
    };
    let reuse = ["--reuse", out.to_str().unwrap()];
    r.image("gzip", "128K");
    let first = inject(&out, &reuse);
    assert_eq!(reuse_counts(&first).0, 0);
    assert!(record.exists(), "{first:#?}");

    write(&r.host("/etc/services"), &text(2900, "services v3"));
    r.image("gzip", "128K");
    let (copied, total) = reuse_counts(&inject(&out, &reuse));
    assert!(copied > 0 && copied < total, "{copied} of {total}");
    let cold = r.dir.path().join("cold.img");
    inject(&cold, &[]);
    assert!(fs::read(&out).unwrap() == fs::read(&cold).unwrap());
    assert!(!r.dir.path().join("cold.img.vxn-reuse").exists());

    inject(
        &out,
        &["--compression", "keep", "--reuse", out.to_str().unwrap()],
    );
    assert!(!record.exists());
}

/// Peak RSS in KiB of `command`, which must succeed: wait4 of its own pid, so that other
/// tests' children do not count. (wait4 reaps the child, which clippy cannot see.)
#[allow(clippy::zombie_processes)]
fn peak_rss_kib(mut command: Command) -> (Run, i64) {
    use std::io::Read;
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).unwrap();
        s
    });
    let mut stderr = String::new();
    err.read_to_string(&mut stderr).unwrap();
    let stdout = reader.join().unwrap();
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for the child we started.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let run = Run {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stdout,
        stderr,
    };
    (run.ok(), usage.ru_maxrss)
}

/// Blocks that xz compresses fast (one byte repeated) yet each unique (a numbered header), so
/// that a record holds one entry per block.
fn quick_blocks(blocks: usize, tag: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks * 131_072);
    for i in 0..blocks {
        let header = format!("{tag} block {i}\n");
        out.extend_from_slice(header.as_bytes());
        out.resize((i + 1) * 131_072, b'a' + (i % 26) as u8);
    }
    out
}

#[test]
fn an_incremental_compile_needs_no_more_memory_for_more_data() {
    if !crate::util::have_tool("mksquashfs") {
        return;
    }
    let mut peaks = Vec::new();
    for mib in [16usize, 96] {
        let dir = TestDir::new();
        let fx = Fixture::new(dir.path(), Arch::X86_64);
        let tree = dir.path().join("tree");
        for i in 0..mib / 4 {
            write(
                &tree.join(format!("data/{i}.bin")),
                &quick_blocks(32, i as u64),
            );
        }
        write(&tree.join("etc/app.conf"), b"version 1\n");
        let image = |tree: &Path| mksquashfs(tree, &fx.input("rootfs"), "gzip", "128K", &[]);
        image(&tree);
        fx.compile(&dir);
        write(&tree.join("data/0.bin"), &quick_blocks(32, 1000));
        write(&tree.join("etc/app.conf"), b"version 2\n");
        image(&tree);
        let (run, peak) = peak_rss_kib(dir.command(&["compile", "--spec", &fx.spec_arg()], &[]));
        let (copied, total) = reuse_counts(&run);
        assert!(
            copied + 40 >= total && copied < total,
            "{copied} of {total}"
        );
        peaks.push((mib, peak));
    }
    eprintln!("peak RSS of an incremental compile (MiB of data, KiB): {peaks:?}");
    let (small, big) = (peaks[0].1, peaks[1].1);
    // 80 MiB more data; an image (or its data) held in memory would show here many times over.
    assert!(
        big <= small + 16 * 1024,
        "peak RSS grew from {small} KiB to {big} KiB with the data"
    );
}
