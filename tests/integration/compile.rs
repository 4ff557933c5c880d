//! compile: outputs, progress lines, reuse of an unchanged build and rebuild on any change.

use std::fs;
use std::os::unix::fs::MetadataExt;

use serde_json::json;
use vxn_blobs::demo::{self, DEMO_INITRAMFS};
use vxn_blobs::squashfs;

use crate::util::{mode, names, Arch, Fixture, TestDir, EPOCH};

#[test]
fn compile_fills_build_dir_with_the_three_parts_a_reuse_record_and_a_state_file() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    let run = fx.compile(&dir);
    assert!(run.stdout.contains("compile: built"), "{run:#?}");
    assert_eq!(
        names(&fx.build_dir()),
        [
            ".vxn-blobs-state.json",
            ".vxn-blobs.lock",
            "initramfs.cpio.gz",
            "kernel",
            "rootfs.img",
            "rootfs.img.vxn-reuse"
        ]
    );
    for name in ["initramfs.cpio.gz", "kernel", "rootfs.img"] {
        assert_eq!(mode(&fx.build_dir().join(name)), 0o644, "{name}");
    }
    // initramfs and kernel are copies, byte for byte.
    assert_eq!(
        fs::read(fx.build_dir().join("initramfs.cpio.gz")).unwrap(),
        fs::read(fx.input("initramfs")).unwrap()
    );
    assert_eq!(
        fs::read(fx.build_dir().join("kernel")).unwrap(),
        fs::read(fx.input("kernel")).unwrap()
    );
    // rootfs.img holds the injected scripts, mode 0755, with the input's bytes.
    let rootfs = fx.build_dir().join("rootfs.img");
    for (i, dest) in ["/vxn-init.sh", "/vcontainer-init-common.sh"]
        .iter()
        .enumerate()
    {
        let info = squashfs::stat(&rootfs, dest).unwrap();
        assert_eq!(info.mode, 0o755, "{dest}");
        assert_eq!(
            info.sha256.as_deref(),
            Some(crate::util::sha256(&fx.inject_source(i)).as_str())
        );
        assert_eq!(info.mtime, EPOCH, "{dest}");
    }
    // What injection did not touch reads back as in the input.
    for path in ["/bin/busybox", "/etc/shadow", "/bin/sh", "/dev/console"] {
        assert_eq!(
            squashfs::stat(&fx.input("rootfs"), path).unwrap(),
            squashfs::stat(&rootfs, path).unwrap(),
            "{path}"
        );
    }
}

#[test]
fn rootfs_img_passes_unsquashfs_when_available() {
    if !crate::util::have_tool("unsquashfs") {
        return;
    }
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::Aarch64);
    fx.compile(&dir);
    let out = std::process::Command::new("unsquashfs")
        .args(["-s"])
        .arg(fx.build_dir().join("rootfs.img"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Compression xz"));
    let out = std::process::Command::new("unsquashfs")
        .args(["-lln"])
        .arg(fx.build_dir().join("rootfs.img"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let line = listing
        .lines()
        .find(|l| l.ends_with("squashfs-root/vcontainer-init-common.sh"))
        .unwrap_or_else(|| panic!("not listed: {listing}"));
    assert!(line.starts_with("-rwxr-xr-x 0/0"), "{line}");
}

#[test]
fn progress_lines_rise_to_100_on_their_own_lines() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    let run = dir
        .run(&["compile", "--spec", &fx.spec_arg(), "--progress"])
        .ok();
    let percents: Vec<u32> = run
        .stdout
        .lines()
        .filter_map(|l| l.strip_suffix('%'))
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(percents.len() >= 2, "{run:#?}");
    assert!(percents.windows(2).all(|w| w[0] < w[1]), "{percents:?}");
    assert_eq!(percents.last(), Some(&100));
    // Only the percentage lines carry a '%': BitBake's handler reads any "(\d+)%".
    assert!(!run.stderr.contains('%'), "{run:#?}");
    let others = run.stdout.lines().filter(|l| !l.ends_with('%'));
    assert!(others.clone().all(|l| !l.contains('%')), "{run:#?}");

    // A reuse prints just 100%.
    let run = dir
        .run(&["compile", "--spec", &fx.spec_arg(), "--progress"])
        .ok();
    assert_eq!(run.stdout.lines().next(), Some("100%"), "{run:#?}");
}

#[test]
fn unchanged_rerun_reuses_the_outputs_without_touching_them() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);
    let stamp = |name: &str| {
        let m = fs::metadata(fx.build_dir().join(name)).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let before: Vec<_> = ["initramfs.cpio.gz", "kernel", "rootfs.img"]
        .iter()
        .map(|n| stamp(n))
        .collect();
    let run = fx.compile(&dir);
    assert!(run.stdout.contains("compile: reused"), "{run:#?}");
    assert!(run.stderr.contains("reusing the outputs"), "{run:#?}");
    let after: Vec<_> = ["initramfs.cpio.gz", "kernel", "rootfs.img"]
        .iter()
        .map(|n| stamp(n))
        .collect();
    assert_eq!(before, after);
    // jobs only changes speed, so it does not defeat reuse.
    let mut fx = fx;
    fx.set("jobs", json!(1));
    assert!(fx.compile(&dir).stdout.contains("compile: reused"));
}

/// Runs compile and asserts it rebuilt, with `why` in its reason.
#[track_caller]
fn assert_rebuilds(dir: &TestDir, fx: &Fixture, why: &str) {
    let run = fx.compile(dir);
    assert!(run.stdout.contains("compile: built"), "{why}: {run:#?}");
    assert!(run.stdout.contains(why), "{why}: {run:#?}");
    // And the rebuild is reused in turn.
    assert!(fx.compile(dir).stdout.contains("compile: reused"), "{why}");
}

#[test]
fn any_changed_input_byte_rebuilds() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);

    demo::write_initramfs(&fx.input("initramfs"), &DEMO_INITRAMFS, EPOCH + 1).unwrap();
    assert_rebuilds(&dir, &fx, "input initramfs");

    squashfs::write_sample_image(&fx.input("rootfs"), EPOCH + 1).unwrap();
    assert_rebuilds(&dir, &fx, "input rootfs");

    let mut kernel = fs::read(fx.input("kernel")).unwrap();
    let last = kernel.len() - 1;
    kernel[last] ^= 1;
    fs::write(fx.input("kernel"), kernel).unwrap();
    assert_rebuilds(&dir, &fx, "input kernel");

    let mut script = fs::read(fx.inject_source(1)).unwrap();
    script.push(b'\n');
    fs::write(fx.inject_source(1), script).unwrap();
    assert_rebuilds(&dir, &fx, "input inject[1]");

    fs::remove_file(fx.input("kernel")).unwrap();
    assert_rebuilds(&dir, &fx, "input kernel");
}

#[test]
fn any_changed_spec_field_rebuilds() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);
    for (key, value) in [
        ("runtime", json!("vpdmn")),
        ("machine", json!("genericx86-64")),
        ("multiconfig", json!("mc-other")),
        ("target_arch", json!("i686")),
        ("blob_arch", json!("x86")),
        ("kernel_name", json!("vmlinuz")),
        ("deploy_dir", json!("deploy2")),
        ("kernel_required", json!(true)),
        ("compression", json!("keep")),
        ("source_date_epoch", json!(EPOCH + 60)),
    ] {
        fx.set(key, value);
        assert_rebuilds(&dir, &fx, "the spec changed");
    }
    fx.spec["inject"][0]["mode"] = json!("0700");
    fx.write_spec();
    assert_rebuilds(&dir, &fx, "the spec changed");
    let info = squashfs::stat(&fx.build_dir().join("rootfs.img"), "/vxn-init.sh").unwrap();
    assert_eq!(info.mode, 0o700);
}

#[test]
fn a_modified_output_is_rebuilt_not_reused() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);
    let rootfs = fx.build_dir().join("rootfs.img");
    let good = fs::read(&rootfs).unwrap();
    let mut bad = good.clone();
    bad[200] ^= 0xff;
    fs::write(&rootfs, &bad).unwrap();
    let run = fx.compile(&dir);
    assert!(run.stdout.contains("compile: built"), "{run:#?}");
    assert!(run.stdout.contains("no longer matches"), "{run:#?}");
    assert_eq!(fs::read(&rootfs).unwrap(), good);
}

#[test]
fn a_missing_kernel_warns_and_compiles_without_one() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::Aarch64);
    fs::remove_file(fx.input("kernel")).unwrap();
    let run = fx.compile(&dir);
    let kernel = fx.input("kernel").display().to_string();
    assert!(
        run.stderr
            .contains(&format!("vxn-blobs: warning: Kernel not found at {kernel}")),
        "{run:#?}"
    );
    assert!(!fx.build_dir().join("kernel").exists());
}

#[test]
fn planted_symlinks_at_output_paths_are_replaced_not_followed() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    let victim = dir.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    for name in [
        "rootfs.img",
        "initramfs.cpio.gz",
        "kernel",
        ".vxn-blobs-state.json",
    ] {
        std::os::unix::fs::symlink(&victim, fx.build_dir().join(name)).unwrap();
    }
    fx.compile(&dir);
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    for name in [
        "rootfs.img",
        "initramfs.cpio.gz",
        "kernel",
        ".vxn-blobs-state.json",
    ] {
        let meta = fs::symlink_metadata(fx.build_dir().join(name)).unwrap();
        assert!(meta.file_type().is_file(), "{name}");
    }
}

#[test]
fn a_second_compile_waits_for_the_lock_and_then_succeeds() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::io::AsRawFd;

    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    // Hold the lock the way another compile would.
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(fx.build_dir().join(".vxn-blobs.lock"))
        .unwrap();
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);

    let mut child = dir
        .command(&["compile", "--spec", &fx.spec_arg()], &[])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("waiting for another vxn-blobs run"), "{line}");
    // Nothing was written while it waited.
    assert!(!fx.build_dir().join("rootfs.img").exists());
    drop(lock);
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(fx.build_dir().join(".vxn-blobs-state.json").exists());
}

#[test]
fn leftover_temporaries_of_a_killed_run_are_removed_and_nothing_else() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fs::write(fx.build_dir().join(".vxn-blobs-tmp-rootfs"), b"partial").unwrap();
    fs::write(fx.build_dir().join("notes.txt"), b"mine").unwrap();
    fx.compile(&dir);
    assert!(!fx.build_dir().join(".vxn-blobs-tmp-rootfs").exists());
    assert_eq!(fs::read(fx.build_dir().join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn a_compile_killed_midway_leaves_the_previous_outputs_and_the_next_run_cleans_up() {
    use std::io::{BufRead, BufReader};
    if !crate::util::have_tool("mksquashfs") {
        return;
    }
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);
    let outputs = [
        "initramfs.cpio.gz",
        "kernel",
        "rootfs.img",
        ".vxn-blobs-state.json",
    ];
    let snapshot = || -> Vec<Vec<u8>> {
        outputs
            .iter()
            .map(|n| fs::read(fx.build_dir().join(n)).unwrap())
            .collect()
    };
    let before = snapshot();

    // A rootfs whose xz recompression takes a while: 4 MiB that does not compress.
    let tree = dir.path().join("tree");
    fs::create_dir(&tree).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..4 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    fs::write(tree.join("noise"), noise).unwrap();
    let status = std::process::Command::new("mksquashfs")
        .arg(&tree)
        .arg(fx.input("rootfs"))
        .args(["-noappend", "-quiet", "-no-progress", "-comp", "gzip"])
        .status()
        .unwrap();
    assert!(status.success());

    let mut child = dir
        .command(&["compile", "--spec", &fx.spec_arg(), "--progress"], &[])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // "0%" comes as compile starts staging its outputs: kill it there.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "0%\n");
    child.kill().unwrap();
    let status = child.wait().unwrap();
    if status.success() {
        // Finished before the signal landed: then it must be complete.
        assert!(fx.compile(&dir).stdout.contains("compile: reused"));
    } else {
        assert_eq!(snapshot(), before, "a final name changed");
        // The next run removes whatever temporaries the killed run had made, and builds.
        let run = fx.compile(&dir);
        assert!(run.stdout.contains("compile: built"), "{run:#?}");
    }
    assert!(names(&fx.build_dir())
        .iter()
        .all(|n| !n.contains(".vxn-blobs-tmp-")));
    fx.deploy(&dir);
}

#[test]
fn sqfsdiff_sees_only_the_injected_files_change() {
    if !crate::util::have_tool("sqfsdiff") {
        return;
    }
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);
    let out = std::process::Command::new("sqfsdiff")
        .arg("-a")
        .arg(fx.input("rootfs"))
        .arg("-b")
        .arg(fx.build_dir().join("rootfs.img"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    // Exit 1: different, as the scripts were injected; 2 would mean it could not read one.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(report.contains("vcontainer-init-common.sh"), "{report}");
    assert!(report.contains("/vxn-init.sh"), "{report}");
    for line in report.lines() {
        assert!(
            line.contains("vxn-init.sh") || line.contains("vcontainer-init-common.sh"),
            "unexpected difference: {line}\n{report}"
        );
    }
}
