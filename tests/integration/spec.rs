//! The spec as the CLI reads it: paths relative to the spec file, not to the working directory.

use std::fs;

use crate::util::{Arch, Fixture, TestDir};

#[test]
fn relative_paths_are_relative_to_the_spec_file() {
    let dir = TestDir::new();
    let fx = Fixture::new(&dir.path().join("project/sub"), Arch::X86_64);
    // Run from two levels up with a relative spec path: inputs still resolve next to the spec.
    dir.run(&["compile", "--spec", "project/sub/spec.json"])
        .ok();
    dir.run(&["deploy", "--spec", "project/sub/spec.json"]).ok();
    assert!(fx.deployed().join("rootfs.img").is_file());
    assert!(!dir.path().join("build").exists());
    assert!(!dir.path().join("deploy").exists());
    // The resolved spec is the same from anywhere, so another working directory reuses.
    let elsewhere = TestDir::new();
    let run = elsewhere.run(&["compile", "--spec", &fx.spec_arg()]).ok();
    assert!(run.stdout.contains("compile: reused"), "{run:#?}");
}

#[test]
fn absolute_paths_are_taken_as_they_are() {
    let dir = TestDir::new();
    let mut fx = Fixture::new(dir.path(), Arch::Aarch64);
    let inputs = TestDir::new();
    let rootfs = inputs.path().join("rootfs.squashfs");
    fs::rename(fx.input("rootfs"), &rootfs).unwrap();
    fx.set("rootfs", serde_json::json!(rootfs));
    fx.compile(&dir);
}
