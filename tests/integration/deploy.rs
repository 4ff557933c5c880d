//! deploy: the tree under deploy_dir/vxn/<arch>, README, SHA256SUMS, refusal without a
//! completed compile, stale files and reproducibility across directories.

use std::fs;

use serde_json::json;

use crate::util::{self, mode, names, sha256, Arch, Fixture, TestDir, EPOCH_DATE};

/// Compiles and deploys `arch` and checks the whole deployed tree.
fn deploy_tree(arch: Arch) {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), arch);
    fx.compile(&dir);
    let run = fx.deploy(&dir);
    assert!(run.stdout.contains("deploy: installed into"), "{run:#?}");
    let deployed = fx.deployed();
    let mut expected = vec![
        arch.kernel_name(),
        "README",
        "SHA256SUMS",
        "initramfs.cpio.gz",
        "rootfs.img",
    ];
    expected.sort();
    assert_eq!(names(&deployed), expected);
    assert_eq!(names(&dir.path().join("deploy")), ["vxn"]);
    assert_eq!(names(&dir.path().join("deploy/vxn")), [arch.target_arch()]);
    for name in &expected {
        assert_eq!(mode(&deployed.join(name)), 0o644, "{name}");
    }
    // The kernel is deployed under kernel_name, byte for byte.
    assert_eq!(
        fs::read(deployed.join(arch.kernel_name())).unwrap(),
        fs::read(fx.input("kernel")).unwrap()
    );
    assert_eq!(
        sha256(&deployed.join("rootfs.img")),
        sha256(&fx.build_dir().join("rootfs.img"))
    );

    let readme = fs::read_to_string(deployed.join("README")).unwrap();
    for field in [
        format!("Built for: {}\n", arch.target_arch()),
        format!("Machine: {}\n", arch.machine()),
        format!("Multiconfig: {}\n", arch.multiconfig()),
        "Source runtime: vdkr\n".to_string(),
        format!("Date: {EPOCH_DATE}\n"),
        format!("  {} ", arch.kernel_name()),
        "\nFiles:\n".to_string(),
        "\nBoot flow:\n".to_string(),
        "-> switch_root into rootfs.img".to_string(),
    ] {
        assert!(readme.contains(&field), "{field:?} missing from:\n{readme}");
    }
    assert!(
        readme.starts_with("vxn Boot Blobs (Xen DomU)\n"),
        "{readme}"
    );

    let sums = fs::read_to_string(deployed.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 4, "{sums}");
    for line in sums.lines() {
        let (sha, name) = line.split_once("  ").unwrap();
        assert_eq!(sha, sha256(&deployed.join(name)), "{name}");
    }
    if util::have_tool("sha256sum") {
        let out = std::process::Command::new("sha256sum")
            .args(["-c", "--strict", "SHA256SUMS"])
            .current_dir(&deployed)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }
}

#[test]
fn deploys_the_x86_64_tree() {
    deploy_tree(Arch::X86_64);
}

#[test]
fn deploys_the_aarch64_tree() {
    deploy_tree(Arch::Aarch64);
}

#[test]
fn outputs_are_byte_identical_across_directories() {
    let (a, b) = (TestDir::new(), TestDir::new());
    let fa = Fixture::new(&a.path().join("one"), Arch::X86_64);
    let fb = Fixture::new(&b.path().join("elsewhere/two"), Arch::X86_64);
    for (dir, fx) in [(&a, &fa), (&b, &fb)] {
        fx.compile(dir);
        fx.deploy(dir);
    }
    let listed = names(&fa.deployed());
    assert_eq!(listed, names(&fb.deployed()));
    for name in listed {
        assert_eq!(
            fs::read(fa.deployed().join(&name)).unwrap(),
            fs::read(fb.deployed().join(&name)).unwrap(),
            "{name} differs"
        );
    }
}

#[test]
fn source_date_epoch_from_the_environment_dates_the_readme() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.spec.as_object_mut().unwrap().remove("source_date_epoch");
    fx.write_spec();
    let env = [("SOURCE_DATE_EPOCH", "1302044400")];
    dir.run_with(&["compile", "--spec", &fx.spec_arg()], &env)
        .ok();
    dir.run_with(&["deploy", "--spec", &fx.spec_arg()], &env)
        .ok();
    let readme = fs::read_to_string(fx.deployed().join("README")).unwrap();
    assert!(
        readme.contains("Date: Tue Apr  5 23:00:00 UTC 2011\n"),
        "{readme}"
    );
    // A deploy under another SOURCE_DATE_EPOCH is not the compiled spec.
    let run = dir.run_with(
        &["deploy", "--spec", &fx.spec_arg()],
        &[("SOURCE_DATE_EPOCH", "7")],
    );
    assert!(
        run.error_line().contains("run `vxn-blobs compile"),
        "{run:#?}"
    );
}

#[test]
fn deploy_without_a_completed_compile_says_to_run_compile() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    let expect_refusal = |fx: &Fixture, why: &str| {
        let run = dir.run(&["deploy", "--spec", &fx.spec_arg()]);
        let line = run.error_line();
        assert!(line.contains(why), "{line}");
        assert!(
            line.contains(&format!(
                "run `vxn-blobs compile --spec {}` first",
                fx.spec_arg()
            )),
            "{line}"
        );
        assert!(
            line.contains(&fx.build_dir().display().to_string()),
            "{line}"
        );
    };
    expect_refusal(&fx, "no .vxn-blobs-state.json");
    assert!(!fx.deployed().exists());

    fx.compile(&dir);
    fs::write(fx.build_dir().join(".vxn-blobs-state.json"), b"{ not json").unwrap();
    expect_refusal(&fx, "not a valid record");

    fx.compile(&dir);
    let rootfs = fx.build_dir().join("rootfs.img");
    let mut bytes = fs::read(&rootfs).unwrap();
    bytes[100] ^= 1;
    fs::write(&rootfs, bytes).unwrap();
    expect_refusal(&fx, "has changed");
    // Neither staged files nor the directories this deploy created are left behind.
    assert!(names(&dir.path().join("deploy")).is_empty());

    fx.compile(&dir);
    fs::remove_file(fx.build_dir().join("kernel")).unwrap();
    expect_refusal(&fx, "is missing");

    fx.compile(&dir);
    fx.set("machine", json!("qemux86"));
    expect_refusal(&fx, "the spec (or SOURCE_DATE_EPOCH) changed");
}

#[test]
fn a_redeploy_removes_what_the_earlier_deploy_installed_and_nothing_else() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);
    fx.deploy(&dir);
    fs::write(fx.deployed().join("my-notes"), b"mine").unwrap();

    // The kernel went away: the next deploy has none, and the old bzImage must not linger.
    fs::remove_file(fx.input("kernel")).unwrap();
    fx.compile(&dir);
    let run = fx.deploy(&dir);
    assert!(run.stdout.contains("removed bzImage"), "{run:#?}");
    assert_eq!(
        names(&fx.deployed()),
        [
            "README",
            "SHA256SUMS",
            "initramfs.cpio.gz",
            "my-notes",
            "rootfs.img"
        ]
    );
    let readme = fs::read_to_string(fx.deployed().join("README")).unwrap();
    assert!(!readme.contains("bzImage"), "{readme}");

    // A renamed kernel replaces the old name.
    vxn_blobs::demo::write_fake_kernel(&fx.input("kernel"), Arch::X86_64.kernel_arch()).unwrap();
    fx.set("kernel_name", json!("vmlinuz"));
    fx.compile(&dir);
    fx.deploy(&dir);
    fx.set("kernel_name", json!("bzImage"));
    fx.compile(&dir);
    fx.deploy(&dir);
    assert_eq!(
        names(&fx.deployed()),
        [
            "README",
            "SHA256SUMS",
            "bzImage",
            "initramfs.cpio.gz",
            "my-notes",
            "rootfs.img"
        ]
    );
}

#[test]
fn deploy_does_not_follow_planted_symlinks() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);
    let victim = dir.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    fs::create_dir_all(fx.deployed()).unwrap();
    for name in ["README", "SHA256SUMS", "rootfs.img", "bzImage"] {
        std::os::unix::fs::symlink(&victim, fx.deployed().join(name)).unwrap();
    }
    fx.deploy(&dir);
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    for name in ["README", "SHA256SUMS", "rootfs.img", "bzImage"] {
        assert!(fs::symlink_metadata(fx.deployed().join(name))
            .unwrap()
            .file_type()
            .is_file());
    }

    // A symlinked vxn/ directory would send the files elsewhere: refused.
    let other = TestDir::new();
    let fx2 = Fixture::new(other.path(), Arch::X86_64);
    fx2.compile(&other);
    let elsewhere = other.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, other.path().join("deploy/vxn")).unwrap();
    let run = other.run(&["deploy", "--spec", &fx2.spec_arg()]);
    let line = run.error_line();
    assert!(line.contains("is a symlink"), "{line}");
    assert!(names(&elsewhere).is_empty());
}

#[test]
fn deploy_hardlinks_from_build_dir() {
    use std::os::unix::fs::MetadataExt;
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);
    fx.deploy(&dir);
    let built = fs::metadata(fx.build_dir().join("rootfs.img")).unwrap();
    let deployed = fs::metadata(fx.deployed().join("rootfs.img")).unwrap();
    assert_eq!((built.dev(), built.ino()), (deployed.dev(), deployed.ino()));
    // A later rebuild replaces the build file by rename and leaves the deployed inode intact.
    let before = fs::read(fx.deployed().join("rootfs.img")).unwrap();
    let mut fx = fx;
    fx.set("compression", json!("keep"));
    fx.compile(&dir);
    assert_eq!(fs::read(fx.deployed().join("rootfs.img")).unwrap(), before);
}

/// Runs install into `destdir` and returns the run (not asserted).
pub(crate) fn install(dir: &TestDir, fx: &Fixture, destdir: &std::path::Path) -> util::Run {
    dir.run(&[
        "install",
        "--spec",
        &fx.spec_arg(),
        "--destdir",
        &destdir.display().to_string(),
    ])
}

#[test]
fn install_puts_blobs_and_sums_under_destdir_as_copies() {
    use std::os::unix::fs::MetadataExt;
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);
    // Like ${D}: the tool creates it and the install_dir below it.
    let dest = dir.path().join("image");
    let run = install(&dir, &fx, &dest).ok();
    assert!(run.stdout.contains("install: installed into"), "{run:#?}");
    let installed = dest.join("usr/share/vxn/x86_64");
    assert_eq!(
        names(&installed),
        ["SHA256SUMS", "bzImage", "initramfs.cpio.gz", "rootfs.img"]
    );
    for (name, built) in [
        ("bzImage", "kernel"),
        ("initramfs.cpio.gz", "initramfs.cpio.gz"),
        ("rootfs.img", "rootfs.img"),
    ] {
        let path = installed.join(name);
        assert_eq!(mode(&path), 0o644, "{name}");
        // Copies: ${D} is under pseudo and must not share inodes with ${B}.
        assert_eq!(fs::metadata(&path).unwrap().nlink(), 1, "{name}");
        assert_eq!(sha256(&path), sha256(&fx.build_dir().join(built)), "{name}");
    }
    let sums = fs::read_to_string(installed.join("SHA256SUMS")).unwrap();
    assert_eq!(sums.lines().count(), 3, "{sums}");
    for line in sums.lines() {
        let (sha, name) = line.split_once("  ").unwrap();
        assert_eq!(sha, sha256(&installed.join(name)), "{name}");
    }

    // The same inputs give the same bytes in another destdir, and installing again is harmless.
    let again = dir.path().join("image2");
    install(&dir, &fx, &again).ok();
    install(&dir, &fx, &dest).ok();
    for name in names(&installed) {
        assert_eq!(
            fs::read(installed.join(&name)).unwrap(),
            fs::read(again.join("usr/share/vxn/x86_64").join(&name)).unwrap(),
            "{name}"
        );
    }

    // install_dir moves it; the spec changed, so it wants a compile first.
    fx.set("install_dir", json!("/opt/vxn/blobs"));
    let run = install(&dir, &fx, &dest);
    assert!(
        run.error_line().contains("holds no completed compile"),
        "{run:#?}"
    );
    fx.compile(&dir);
    install(&dir, &fx, &dest).ok();
    assert_eq!(names(&dest.join("opt/vxn/blobs")).len(), 4);
}

#[test]
fn install_does_not_follow_symlinks_below_destdir() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);
    let dest = dir.path().join("image");
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir_all(dest.join("usr")).unwrap();
    fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dest.join("usr/share")).unwrap();
    let run = install(&dir, &fx, &dest);
    let line = run.error_line();
    assert!(
        line.contains("is a symlink") && line.contains("below destdir"),
        "{line}"
    );
    assert!(names(&elsewhere).is_empty());
}

#[test]
fn the_readme_names_the_tool_that_assembled_the_blobs() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);
    fx.deploy(&dir);
    let readme = fs::read_to_string(fx.deployed().join("README")).unwrap();
    let exe = util::sha256(std::path::Path::new(env!("CARGO_BIN_EXE_vxn-blobs")));
    let line = format!(
        "Assembled by: vxn-blobs {} (executable sha256 {})\n",
        env!("CARGO_PKG_VERSION"),
        &exe[..16]
    );
    assert!(readme.contains(&line), "{line:?} missing from:\n{readme}");
}

/// Regression: install renamed its staged files with tempfile's persist, a raw system call
/// that pseudo (under which BitBake runs do_install) never saw, so the pseudo database kept the
/// temporary names and do_package's tar aborted with "path mismatch". Here install and a tar of
/// the result run under the host's pseudo, as in a recipe.
#[test]
fn install_under_pseudo_leaves_a_destdir_pseudo_can_package() {
    let libdir = "/usr/lib/x86_64-linux-gnu/pseudo";
    if !util::have_tool("pseudo") || !std::path::Path::new(libdir).join("libpseudo.so").exists() {
        assert!(
            !util::ci(),
            "pseudo and libpseudo are required under CI=true"
        );
        return;
    }
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);
    let db = dir.path().join("pseudo-db");
    fs::create_dir(&db).unwrap();
    let dest = dir.path().join("image");
    let under_pseudo = |args: &[&str]| {
        let out = std::process::Command::new("pseudo")
            .args(args)
            .env("PSEUDO_PREFIX", "/usr")
            .env("PSEUDO_LIBDIR", libdir)
            .env("PSEUDO_LOCALSTATEDIR", &db)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
    };
    under_pseudo(&[
        env!("CARGO_BIN_EXE_vxn-blobs"),
        "install",
        "--spec",
        &fx.spec_arg(),
        "--destdir",
        &dest.display().to_string(),
    ]);
    let tarball = dir.path().join("package.tar");
    under_pseudo(&[
        "tar",
        "-C",
        &dest.display().to_string(),
        "-cf",
        &tarball.display().to_string(),
        ".",
    ]);
    let log = fs::read_to_string(db.join("pseudo.log")).unwrap_or_default();
    assert!(!log.contains("mismatch"), "{log}");
}
