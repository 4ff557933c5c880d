//! The block cache: compiles that share a cache directory take the blocks it has instead of
//! compressing them, and the output is still byte for byte what a cold compile writes, whether
//! the cache is empty, warm, damaged, planted with links, written by two compiles at once, full,
//! or read-only.
//!
//! Every compile here starts from an empty build_dir (no previous rootfs.img to reuse), as a
//! fresh builder, a new TMPDIR or rm_work leave it, and is compared with a cold compile of the
//! same inputs without a cache. The rootfs is the feature tree of fixtures.rs imaged by
//! mksquashfs.

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::fixtures::{build_tree, can_run, mksquashfs, noise, text, Tree};
use crate::util::{block_sources, names, Arch, Fixture, Run, Sources, TestDir};

/// A compile fixture whose rootfs is an image of a tree the test edits, with a cache beside it.
struct Builders {
    dir: TestDir,
    fx: Fixture,
    tree: Tree,
    cache: PathBuf,
    builds: usize,
}

impl Builders {
    fn start(test: &str) -> Option<Builders> {
        if !can_run(test, &["mksquashfs"]) {
            return None;
        }
        let dir = TestDir::new();
        let fx = Fixture::new(dir.path(), Arch::X86_64);
        let cache = dir.path().join("cache");
        Some(Builders {
            dir,
            fx,
            tree: build_tree(),
            cache,
            builds: 0,
        })
    }

    fn image(&self, comp: &str) {
        mksquashfs(&self.tree.root, &self.fx.input("rootfs"), comp, "128K", &[]);
    }

    fn write(&self, image_path: &str, bytes: &[u8]) {
        let path = self.tree.host(image_path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    /// Compiles into a new, empty build_dir with the spec's `block_cache` set to `cache`
    /// (`None`: no cache); returns the run and the build_dir.
    fn compile_fresh(&mut self, cache: Option<serde_json::Value>) -> (Run, PathBuf) {
        self.builds += 1;
        let build = format!("build-{}", self.builds);
        self.fx.set("build_dir", build.clone().into());
        match cache {
            Some(value) => self.fx.set("block_cache", value),
            None => {
                self.fx.spec.as_object_mut().unwrap().remove("block_cache");
                self.fx.write_spec();
            }
        }
        let run = self.fx.compile(&self.dir);
        (run, self.dir.path().join(build))
    }

    /// A fresh builder with the shared cache, checked against a cold compile of the same
    /// inputs without one; returns where its blocks came from.
    #[track_caller]
    fn compile_checked(&mut self, step: &str, cache: serde_json::Value) -> (Sources, Run) {
        let (run, ours) = self.compile_fresh(Some(cache));
        let (_, cold) = self.compile_fresh(None);
        assert!(
            fs::read(ours.join("rootfs.img")).unwrap()
                == fs::read(cold.join("rootfs.img")).unwrap(),
            "{step}: rootfs.img differs from the cold compile's: {run:#?}"
        );
        let sources = block_sources(&run);
        assert_eq!(sources.copied, 0, "{step}: nothing to copy from: {run:#?}");
        assert_eq!(
            sources.from_cache + sources.compressed,
            sources.total,
            "{step}: {run:#?}"
        );
        (sources, run)
    }

    fn cache_spec(&self) -> serde_json::Value {
        json!({"dir": self.cache.display().to_string()})
    }

    /// Every entry of the cache (fan-out directory/name), with size and mtime.
    fn entries(&self) -> Vec<(String, u64, i64)> {
        let mut all = Vec::new();
        for sub in names(&self.cache) {
            let path = self.cache.join(&sub);
            if !path.is_dir() {
                continue;
            }
            for name in names(&path) {
                let meta = fs::symlink_metadata(path.join(&name)).unwrap();
                all.push((format!("{sub}/{name}"), meta.len(), meta.mtime()));
            }
        }
        all
    }

    fn entry_bytes(&self) -> u64 {
        self.entries().iter().map(|e| e.1).sum()
    }
}

#[test]
fn a_fresh_builder_with_a_warm_cache_compresses_only_what_changed() {
    let Some(mut b) =
        Builders::start("a_fresh_builder_with_a_warm_cache_compresses_only_what_changed")
    else {
        return;
    };
    b.image("gzip");
    let cache = b.cache_spec();
    let (first, run) = b.compile_checked("an empty cache", cache.clone());
    // The tree repeats some blocks, which the cache serves within one run already.
    assert!(
        first.compressed > first.total * 9 / 10,
        "{first:?}: {run:#?}"
    );
    let entries = b.entries().len() as u64;
    assert!(
        entries <= first.compressed && entries >= first.total - first.from_cache * 2,
        "{entries} entries for {first:?}"
    );
    assert!(b.cache.join("CACHEDIR.TAG").is_file());

    // One package changed: a binary rebuilt, its config file edited, a file added.
    b.write("/usr/lib/several.bin", &noise(300 * 1024 + 17, 99));
    b.write("/etc/services", &text(3100, "services v2"));
    b.write("/etc/added.conf", b"added = yes\n");
    b.image("gzip");
    let (changed, run) = b.compile_checked("one package changed", cache.clone());
    assert!(
        changed.from_cache > 0 && changed.compressed > 0 && changed.compressed < changed.total / 2,
        "{changed:?}: {run:#?}"
    );

    // The same tree from a zstd image: other stored bytes, the same blocks, all in the cache.
    b.image("zstd");
    let (zstd, run) = b.compile_checked("a zstd source", cache.clone());
    assert_eq!(zstd.from_cache, zstd.total, "{run:#?}");

    // And the cache beside a previous output: reuse first, then the cache.
    b.image("gzip");
    b.fx.set("build_dir", "build".into());
    b.fx.set("block_cache", cache.clone());
    b.fx.compile(&b.dir);
    b.write("/usr/lib/several.bin", &noise(300 * 1024 + 17, 5));
    b.image("gzip");
    let run = b.fx.compile(&b.dir);
    let both = block_sources(&run);
    assert!(both.copied > 0 && both.compressed > 0, "{both:?}: {run:#?}");
    assert_eq!(both.copied + both.from_cache + both.compressed, both.total);
}

#[test]
fn damaged_and_planted_entries_cost_a_compression_never_a_wrong_image() {
    let Some(mut b) =
        Builders::start("damaged_and_planted_entries_cost_a_compression_never_a_wrong_image")
    else {
        return;
    };
    b.image("gzip");
    let cache = b.cache_spec();
    b.compile_checked("filling the cache", cache.clone());
    let entries = b.entries();

    let outside = b.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim");
    fs::write(&victim, b"must stay as it is").unwrap();
    let cache_dir = b.cache.clone();
    let path = |i: usize| cache_dir.join(&entries[i].0);
    // Damage of every kind, each to another entry.
    let mut bytes = fs::read(path(0)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x20;
    fs::write(path(0), &bytes).unwrap();
    let bytes = fs::read(path(1)).unwrap();
    fs::write(path(1), &bytes[..bytes.len() / 2]).unwrap();
    fs::write(path(2), b"garbage").unwrap();
    fs::copy(path(4), path(3)).unwrap(); // another key's entry under this name
    fs::remove_file(path(5)).unwrap();
    symlink(&victim, path(5)).unwrap();
    fs::File::create(path(6)).unwrap().set_len(6 << 30).unwrap();
    let (damaged, run) = b.compile_checked("a damaged cache", cache.clone());
    // Six, or one more where a block the tree repeats was looked up twice at once.
    assert!(
        (6..=12).contains(&damaged.compressed),
        "{damaged:?}: {run:#?}"
    );
    assert!(
        run.stderr
            .contains(&format!("{} entries were damaged", damaged.compressed)),
        "{run:#?}"
    );
    assert_eq!(fs::read(&victim).unwrap(), b"must stay as it is");
    assert!(!fs::symlink_metadata(path(5)).unwrap().is_symlink());

    // The entries were replaced: the next builder finds everything.
    let (healed, run) = b.compile_checked("after the damage", cache);
    assert_eq!(healed.from_cache, healed.total, "{run:#?}");
}

#[test]
fn two_compiles_fill_one_cache_at_once() {
    let Some(mut b) = Builders::start("two_compiles_fill_one_cache_at_once") else {
        return;
    };
    b.image("gzip");
    let cache = b.cache_spec();
    b.fx.set("block_cache", cache.clone());
    let mut children = Vec::new();
    for i in 0..2 {
        let mut spec = b.fx.spec.clone();
        spec["build_dir"] = format!("concurrent-{i}").into();
        let spec_path = b.dir.path().join(format!("concurrent-{i}.json"));
        fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();
        let child = b
            .dir
            .command(
                &["compile", "--spec", &spec_path.display().to_string()],
                &[],
            )
            .spawn()
            .unwrap();
        children.push(child);
    }
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }
    let a = fs::read(b.dir.path().join("concurrent-0/rootfs.img")).unwrap();
    assert!(a == fs::read(b.dir.path().join("concurrent-1/rootfs.img")).unwrap());
    let leftovers: Vec<_> = b
        .entries()
        .into_iter()
        .filter(|e| e.0.contains("/."))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let (after, run) = b.compile_checked("after two at once", cache);
    assert_eq!(after.from_cache, after.total, "{run:#?}");
    assert!(
        a == fs::read(
            b.dir
                .path()
                .join(format!("build-{}", b.builds))
                .join("rootfs.img")
        )
        .unwrap()
    );
}

#[test]
fn the_cache_stays_within_its_limit_and_keeps_what_was_used_last() {
    let Some(mut b) =
        Builders::start("the_cache_stays_within_its_limit_and_keeps_what_was_used_last")
    else {
        return;
    };
    // Two images that share the feature tree but not their 6 MiB payload (which xz cannot
    // shrink, so that the payload is most of each image's entries).
    b.write("/usr/lib/payload.bin", &noise(6 << 20, 1));
    b.image("gzip");
    let first_image = fs::read(b.fx.input("rootfs")).unwrap();
    let cache = b.cache_spec();
    b.compile_checked("the first image", cache.clone());
    let first_entries: Vec<String> = b.entries().into_iter().map(|e| e.0).collect();
    let one_image = b.entry_bytes();

    b.write("/usr/lib/payload.bin", &noise(6 << 20, 2));
    b.image("gzip");
    // Room for one image and a half: the first image's blocks (used longest ago) must go.
    let limit = one_image * 3 / 2;
    let limited = json!({"dir": b.cache.display().to_string(), "max_size": limit});
    // mtimes have one-second steps: make "used longest ago" unambiguous.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (second, run) = b.compile_checked("the second image", limited.clone());
    assert!(second.compressed > 0, "{run:#?}");
    assert!(
        b.entry_bytes() <= limit,
        "{} > {limit}: {run:#?}",
        b.entry_bytes()
    );
    assert!(run.stderr.contains("least recently used"), "{run:#?}");
    let left: Vec<String> = b.entries().into_iter().map(|e| e.0).collect();
    // What the second image is made of stays whole.
    let (again, run) = b.compile_checked("the second image again", limited);
    assert_eq!(again.from_cache, again.total, "{run:#?}");
    let evicted_first = first_entries.iter().filter(|e| !left.contains(e)).count();
    assert!(evicted_first > 0, "nothing of the first image was evicted");

    // The first image is still right from what is left.
    fs::write(b.fx.input("rootfs"), first_image).unwrap();
    b.compile_checked("the first image from a trimmed cache", cache);
}

#[test]
fn a_read_only_cache_is_used_and_left_as_it_is() {
    let Some(mut b) = Builders::start("a_read_only_cache_is_used_and_left_as_it_is") else {
        return;
    };
    b.image("gzip");
    b.compile_checked("filling the cache", b.cache_spec());
    let before = b.entries();
    b.write("/usr/lib/several.bin", &noise(300 * 1024 + 17, 77));
    b.image("gzip");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let read_only = json!({"dir": b.cache.display().to_string(), "read_only": true});
    let (sources, run) = b.compile_checked("a read-only cache", read_only);
    assert!(
        sources.from_cache > 0 && sources.compressed > 0,
        "{sources:?}: {run:#?}"
    );
    assert!(
        run.stderr.contains("(the cache is used read-only)"),
        "{run:#?}"
    );
    assert_eq!(b.entries(), before, "the read-only cache changed");
}

#[test]
fn a_cache_that_cannot_be_used_is_said_and_the_compile_goes_on() {
    let Some(mut b) =
        Builders::start("a_cache_that_cannot_be_used_is_said_and_the_compile_goes_on")
    else {
        return;
    };
    b.image("gzip");
    fs::write(&b.cache, b"a file, not a directory").unwrap();
    let (sources, run) = b.compile_checked("a file for a cache", b.cache_spec());
    assert_eq!(sources.compressed, sources.total);
    assert!(
        run.stderr.contains(&format!(
            "the block cache {} was not used",
            b.cache.display()
        )),
        "{run:#?}"
    );
    // A read-only cache that does not exist: nothing is created.
    let missing = b.dir.path().join("no-such-cache");
    let spec = json!({"dir": missing.display().to_string(), "read_only": true});
    b.compile_checked("a missing read-only cache", spec);
    assert!(!missing.exists());
}

#[test]
fn inject_takes_the_block_cache_too() {
    let Some(b) = Builders::start("inject_takes_the_block_cache_too") else {
        return;
    };
    b.image("gzip");
    let input = b.fx.input("rootfs").display().to_string();
    let add = format!("{}:/vxn-init.sh", b.fx.inject_source(0).display());
    let cache = b.cache.display().to_string();
    let out = |name: &str| b.dir.path().join(name).display().to_string();
    let run = |name: &str, extra: &[&str]| {
        let mut args = vec!["inject", input.as_str(), "-o", name, "--add", add.as_str()];
        args.extend_from_slice(extra);
        b.dir.run(&args).ok()
    };
    run(&out("cold.img"), &[]);
    let first = run(
        &out("first.img"),
        &["--block-cache", &cache, "--block-cache-size", "64M"],
    );
    let second = run(&out("second.img"), &["--block-cache", &cache]);
    let (first, second) = (block_sources(&first), block_sources(&second));
    assert!(
        first.compressed > 0 && second.compressed == 0,
        "{first:?} {second:?}"
    );
    for name in ["first.img", "second.img"] {
        assert!(
            fs::read(out(name)).unwrap() == fs::read(out("cold.img")).unwrap(),
            "{name}"
        );
    }
    let bad = b.dir.run(&[
        "inject",
        &input,
        "-o",
        &out("x.img"),
        "--add",
        &add,
        "--block-cache",
        &cache,
        "--block-cache-size",
        "5X",
    ]);
    assert_eq!(bad.code, Some(2), "{bad:#?}");
    assert!(
        bad.stderr.contains("SIZE is \"5X\", not a size"),
        "{bad:#?}"
    );
    assert!(!Path::new(&out("x.img")).exists());
}
