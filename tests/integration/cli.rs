//! The command surface: inject, demo, logging switches.

use std::fs;

use vxn_blobs::squashfs;

use crate::util::{Arch, Fixture, TestDir};

#[test]
fn inject_adds_files_with_the_given_modes() {
    let dir = TestDir::new();
    squashfs::write_sample_image(&dir.path().join("in.img"), 1000).unwrap();
    fs::write(dir.path().join("a:b.sh"), b"echo a\n").unwrap();
    fs::write(dir.path().join("c.sh"), b"echo c\n").unwrap();
    let run = dir
        .run(&[
            "inject",
            "in.img",
            "--output",
            "out.img",
            "--add",
            "a:b.sh:/etc/a.sh:0700",
            "--add",
            "c.sh:/c.sh",
            "--compression",
            "keep",
            "--jobs",
            "1",
        ])
        .ok();
    assert!(run.stdout.contains("wrote out.img"), "{run:#?}");
    let a = squashfs::stat(&dir.path().join("out.img"), "/etc/a.sh").unwrap();
    assert_eq!(a.mode, 0o700);
    let c = squashfs::stat(&dir.path().join("out.img"), "/c.sh").unwrap();
    assert_eq!(c.mode, 0o755);
    assert_eq!(c.size, 7);
}

#[test]
fn inject_errors_name_the_image() {
    let dir = TestDir::new();
    fs::write(dir.path().join("in.img"), b"not an image").unwrap();
    fs::write(dir.path().join("x"), b"x").unwrap();
    let run = dir.run(&["inject", "in.img", "--output", "out.img", "--add", "x:/x"]);
    assert!(run.error_line().contains("in.img"), "{run:#?}");
    assert!(!dir.path().join("out.img").exists());
}

#[test]
fn demo_runs_from_nothing_and_reuses_on_a_second_run() {
    let dir = TestDir::new();
    let run = dir.run(&["demo"]).ok();
    assert!(run.stdout.contains("Compile (built)"), "{run:#?}");
    assert!(run.stdout.contains("SHA256SUMS: 4 files match"), "{run:#?}");
    assert!(run.stdout.contains("== inputs/vxn-init.sh"), "{run:#?}");
    assert!(
        run.stdout.contains("/etc/shadow mode 0640 uid 0 gid 42"),
        "{run:#?}"
    );
    assert!(!run.stdout.contains("CHANGED"), "{run:#?}");
    let deployed = dir.path().join("vxn-demo/deploy/vxn/x86_64");
    assert!(deployed.join("bzImage").is_file());
    let run = dir.run(&["demo"]).ok();
    assert!(run.stdout.contains("Compile (reused)"), "{run:#?}");
}

#[test]
fn demo_initramfs_lists_with_cpio() {
    if !crate::util::have_tool("cpio") {
        return;
    }
    let dir = TestDir::new();
    let path = dir.path().join("i.cpio.gz");
    vxn_blobs::demo::write_initramfs(&path, &vxn_blobs::demo::DEMO_INITRAMFS, 0).unwrap();
    let mut gz = flate2::read::GzDecoder::new(fs::File::open(&path).unwrap());
    let mut cpio = Vec::new();
    std::io::Read::read_to_end(&mut gz, &mut cpio).unwrap();
    let mut child = std::process::Command::new("cpio")
        .args(["-it", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &cpio).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "dev\ndev/console\ninit\n"
    );
}

#[test]
fn demo_refuses_a_directory_it_did_not_make() {
    let dir = TestDir::new();
    fs::create_dir(dir.path().join("mine")).unwrap();
    fs::write(dir.path().join("mine/thesis.tex"), b"precious").unwrap();
    let run = dir.run(&["demo", "--out", "mine"]);
    assert!(run
        .error_line()
        .contains("mine exists and is not a vxn-blobs demo directory"));
    assert_eq!(crate::util::names(&dir.path().join("mine")), ["thesis.tex"]);
}

#[test]
fn quiet_silences_the_log_and_verbose_adds_debug() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    let run = dir.run(&["-q", "compile", "--spec", &fx.spec_arg()]).ok();
    assert_eq!(run.stderr, "", "{run:#?}");
    let run = dir.run(&["compile", "-v", "--spec", &fx.spec_arg()]).ok();
    assert!(run.stderr.contains("reusing"), "{run:#?}");
    let run = dir
        .run_with(
            &["compile", "--spec", &fx.spec_arg()],
            &[("RUST_LOG", "error")],
        )
        .ok();
    assert_eq!(run.stderr, "", "{run:#?}");
}
