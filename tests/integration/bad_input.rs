//! Every bad input ends in exit 1, one error line that names the file and says what to do, no
//! panic, and nothing new at the final output paths (nor a temporary file left behind).

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::json;
use vxn_blobs::demo;

use crate::util::{names, umask, Arch, Fixture, Run, TestDir};

/// Output names compile and deploy write.
const BUILD_OUTPUTS: [&str; 4] = [
    "initramfs.cpio.gz",
    "rootfs.img",
    "kernel",
    ".vxn-blobs-state.json",
];

/// Asserts that no output and no temporary file exists anywhere below `root`'s build and deploy
/// directories.
#[track_caller]
fn assert_nothing_written(fx: &Fixture) {
    for name in BUILD_OUTPUTS {
        assert!(!fx.build_dir().join(name).exists(), "{name} was written");
    }
    for name in names(&fx.build_dir()) {
        assert!(!name.starts_with(".vxn-blobs-tmp-"), "{name} left behind");
    }
    assert!(names(&fx.root.join("deploy")).is_empty());
}

/// Runs compile on `fx` and checks the failure; returns the error line.
#[track_caller]
fn compile_fails(dir: &TestDir, fx: &Fixture, expected: &[&str]) -> String {
    let run = dir.run(&["compile", "--spec", &fx.spec_arg()]);
    check_line(&run, expected)
}

#[track_caller]
fn check_line(run: &Run, expected: &[&str]) -> String {
    let line = run.error_line();
    for part in expected {
        assert!(line.contains(part), "{part:?} not in {line:?}");
    }
    line
}

fn path_of(path: &Path) -> String {
    path.display().to_string()
}

#[test]
fn missing_spec() {
    let dir = TestDir::new();
    let run = dir.run(&["compile", "--spec", "nope.json"]);
    check_line(&run, &["cannot read spec nope.json", "No such file"]);
    let run = dir.run(&["deploy", "--spec", "nope.json"]);
    check_line(&run, &["cannot read spec nope.json"]);
}

#[test]
fn endless_spec() {
    let dir = TestDir::new();
    let run = dir.run(&["compile", "--spec", "/dev/zero"]);
    check_line(&run, &["spec /dev/zero is invalid", "larger than 1 MiB"]);
}

#[test]
fn malformed_spec() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fs::write(fx.spec_path(), b"{\"schema\": 1, \"runtime\": \"vdkr\",,}").unwrap();
    compile_fails(
        &dir,
        &fx,
        &[
            &format!("spec {} is invalid", fx.spec_arg()),
            "line 1",
            "docs/spec.md",
        ],
    );
    assert_nothing_written(&fx);
}

#[test]
fn unknown_key_is_named() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.set("kernel_requierd", json!(true));
    compile_fails(
        &dir,
        &fx,
        &[&fx.spec_arg(), "unknown field `kernel_requierd`"],
    );
    assert_nothing_written(&fx);
}

#[test]
fn missing_key_is_named() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.spec.as_object_mut().unwrap().remove("rootfs");
    fx.write_spec();
    compile_fails(&dir, &fx, &[&fx.spec_arg(), "missing field `rootfs`"]);
    assert_nothing_written(&fx);
}

#[test]
fn other_schema_version() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.set("schema", json!(2));
    compile_fails(&dir, &fx, &["has schema 2", "reads schema 1"]);
}

#[test]
fn bad_mode() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.spec["inject"][1]["mode"] = json!("0x755");
    fx.write_spec();
    compile_fails(
        &dir,
        &fx,
        &[&fx.spec_arg(), "\"inject[1].mode\"", "\"0x755\"", "octal"],
    );
    assert_nothing_written(&fx);
}

#[test]
fn bad_source_date_epoch_in_the_environment() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.spec.as_object_mut().unwrap().remove("source_date_epoch");
    fx.write_spec();
    let run = dir.run_with(
        &["compile", "--spec", &fx.spec_arg()],
        &[("SOURCE_DATE_EPOCH", "last tuesday")],
    );
    check_line(&run, &["SOURCE_DATE_EPOCH=\"last tuesday\""]);
    assert_nothing_written(&fx);
}

#[test]
fn missing_initramfs_gives_the_bitbake_hint() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fs::remove_file(fx.input("initramfs")).unwrap();
    compile_fails(
        &dir,
        &fx,
        &[
            &format!(
                "Initramfs not found at {}.",
                path_of(&fx.input("initramfs"))
            ),
            "Build it first with: bitbake mc:vruntime-x86-64:vdkr-tiny-initramfs-image",
        ],
    );
    assert_nothing_written(&fx);
}

#[test]
fn missing_rootfs_gives_the_bitbake_hint() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::Aarch64);
    fx.set("runtime", json!("vpdmn"));
    fs::remove_file(fx.input("rootfs")).unwrap();
    compile_fails(
        &dir,
        &fx,
        &[
            &format!(
                "Rootfs image not found at {}.",
                path_of(&fx.input("rootfs"))
            ),
            "Build it first with: bitbake mc:vruntime-aarch64:vpdmn-rootfs-image",
        ],
    );
    assert_nothing_written(&fx);
}

#[test]
fn missing_kernel_with_kernel_required() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.set("kernel_required", json!(true));
    fs::remove_file(fx.input("kernel")).unwrap();
    compile_fails(
        &dir,
        &fx,
        &[
            &format!("Kernel not found at {}.", path_of(&fx.input("kernel"))),
            "bitbake mc:vruntime-x86-64:virtual/kernel",
        ],
    );
    assert_nothing_written(&fx);
}

#[test]
fn missing_inject_source() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fs::remove_file(fx.inject_source(0)).unwrap();
    compile_fails(
        &dir,
        &fx,
        &[
            &format!(
                "Inject source not found at {}",
                path_of(&fx.inject_source(0))
            ),
            "Fix \"inject\"",
        ],
    );
    assert_nothing_written(&fx);
}

#[test]
fn truncated_initramfs() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    let bytes = fs::read(fx.input("initramfs")).unwrap();
    for cut in [bytes.len() - 1, bytes.len() - 8, bytes.len() / 2, 12] {
        fs::write(fx.input("initramfs"), &bytes[..cut]).unwrap();
        compile_fails(
            &dir,
            &fx,
            &[
                &path_of(&fx.input("initramfs")),
                "not a complete gzip stream",
                "truncated",
            ],
        );
        assert_nothing_written(&fx);
    }
}

#[test]
fn initramfs_that_is_not_gzip_or_not_cpio() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fs::write(fx.input("initramfs"), b"just some text\n").unwrap();
    compile_fails(
        &dir,
        &fx,
        &[&path_of(&fx.input("initramfs")), "is not gzip-compressed"],
    );
    assert_nothing_written(&fx);

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&[b'x'; 4096]).unwrap();
    fs::write(fx.input("initramfs"), gz.finish().unwrap()).unwrap();
    compile_fails(
        &dir,
        &fx,
        &[
            &path_of(&fx.input("initramfs")),
            "does not hold a newc cpio archive",
        ],
    );
    assert_nothing_written(&fx);
}

#[test]
fn initramfs_without_init_only_warns() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    demo::write_initramfs(&fx.input("initramfs"), &demo::DEMO_INITRAMFS[..2], 0).unwrap();
    let run = fx.compile(&dir);
    assert!(run.stderr.contains("warning: initramfs"), "{run:#?}");
    assert!(run.stderr.contains("has no /init"), "{run:#?}");
}

#[test]
fn wrong_kernel_magic() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    demo::write_fake_kernel(&fx.input("kernel"), Arch::Aarch64.kernel_arch()).unwrap();
    compile_fails(
        &dir,
        &fx,
        &[
            &path_of(&fx.input("kernel")),
            "is not a kernel image for x86_64 (bzImage)",
            "offset 0x202",
        ],
    );
    assert_nothing_written(&fx);
}

#[test]
fn rootfs_that_is_not_squashfs() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fs::write(fx.input("rootfs"), vec![0u8; 8192]).unwrap();
    compile_fails(
        &dir,
        &fx,
        &[&path_of(&fx.input("rootfs")), "not a squashfs image"],
    );
    assert_nothing_written(&fx);
}

#[test]
fn a_failed_compile_leaves_the_previous_complete_one_in_place() {
    let dir = TestDir::new();
    let fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.compile(&dir);
    let snapshot = |fx: &Fixture| -> Vec<(String, Vec<u8>)> {
        BUILD_OUTPUTS
            .iter()
            .map(|n| (n.to_string(), fs::read(fx.build_dir().join(n)).unwrap()))
            .collect()
    };
    let before = snapshot(&fx);
    demo::write_fake_kernel(&fx.input("kernel"), Arch::Aarch64.kernel_arch()).unwrap();
    compile_fails(&dir, &fx, &["is not a kernel image"]);
    assert_eq!(snapshot(&fx), before);
    // ...and it still deploys, since the record still matches the spec and the outputs.
    fx.deploy(&dir);
}

#[test]
fn missing_directories_are_created_and_unusable_ones_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    fx.set("build_dir", json!("new/nested/build"));
    fx.set("deploy_dir", json!("out/deploy"));
    // deploy before any compile: it says to compile, and creates nothing.
    let run = dir.run(&["deploy", "--spec", &fx.spec_arg()]);
    check_line(
        &run,
        &[
            &path_of(&dir.path().join("new/nested/build")),
            "does not exist",
            "run `vxn-blobs compile --spec",
        ],
    );
    assert!(!dir.path().join("new").exists() && !dir.path().join("out").exists());

    // compile and deploy create their directories and the missing parents, as mkdir -p and
    // install -d did in the seed.
    fx.compile(&dir);
    assert!(dir.path().join("new/nested/build/rootfs.img").is_file());
    fx.deploy(&dir);
    assert!(dir
        .path()
        .join("out/deploy/vxn/x86_64/rootfs.img")
        .is_file());
    for created in ["new", "new/nested", "new/nested/build", "out", "out/deploy"] {
        let mode = fs::metadata(dir.path().join(created))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755 & !umask(), "{created}");
    }

    // An existing symlink on the way is the user's layout, and is followed.
    std::os::unix::fs::symlink("new/nested/build", dir.path().join("linked")).unwrap();
    fx.set("build_dir", json!("linked/again"));
    fx.compile(&dir);
    assert!(dir
        .path()
        .join("new/nested/build/again/rootfs.img")
        .is_file());

    // Something that is not a directory, at the path or on the way to it, is refused.
    fx.set("build_dir", json!("spec.json"));
    compile_fails(&dir, &fx, &["build_dir", "is not a directory"]);
    fx.set("build_dir", json!("spec.json/build"));
    compile_fails(
        &dir,
        &fx,
        &[
            "build_dir",
            "cannot be created",
            "spec.json is not a directory",
        ],
    );
    fx.set("build_dir", json!("build"));
    fx.set("deploy_dir", json!("spec.json/deploy"));
    fx.compile(&dir);
    let run = dir.run(&["deploy", "--spec", &fx.spec_arg()]);
    check_line(&run, &["deploy_dir", "cannot be created"]);
}

/// A directory the tool cannot write to. As root, permission bits do not stop writes, so /sys
/// (which refuses new files even to root) stands in.
fn unwritable_dir(dir: &TestDir) -> std::path::PathBuf {
    if unsafe { libc::geteuid() } == 0 {
        std::path::PathBuf::from("/sys")
    } else {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join("readonly");
        fs::create_dir(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o555)).unwrap();
        path
    }
}

#[test]
fn unwritable_build_dir() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    let readonly = unwritable_dir(&dir);
    fx.set("build_dir", json!(readonly));
    compile_fails(
        &dir,
        &fx,
        &[&format!("build_dir {} is not writable", path_of(&readonly))],
    );
    assert!(names(&readonly)
        .iter()
        .all(|n| !n.starts_with(".vxn-blobs")));
}

#[test]
fn unwritable_deploy_dir() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::X86_64);
    let readonly = unwritable_dir(&dir);
    fx.set("deploy_dir", json!(readonly));
    fx.compile(&dir);
    let run = dir.run(&["deploy", "--spec", &fx.spec_arg()]);
    check_line(&run, &[&path_of(&readonly), "is not writable"]);
}

#[test]
fn usage_errors_exit_2() {
    let dir = TestDir::new();
    for args in [
        &["compile"][..],
        &["deploy", "--spec"],
        &["frobnicate"],
        &[
            "inject", "in.img", "--output", "out.img", "--add", "no-dest",
        ],
        &[
            "inject",
            "in.img",
            "--output",
            "out.img",
            "--add",
            "a:/b:0999",
        ],
        &[
            "inject",
            "in.img",
            "--output",
            "out.img",
            "--add",
            "a:/b",
            "--compression",
            "zstd",
        ],
    ] {
        let run = dir.run(args);
        assert_eq!(run.code, Some(2), "{args:?}: {run:#?}");
        assert!(!run.stderr.contains("panicked"));
    }
}
