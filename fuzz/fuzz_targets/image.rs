//! Fuzzes the squashfs reader and injector through the public API, as the command uses them:
//! the input bytes become an image file, which is injected into (keeping the compressor, then
//! recompressing as xz) and inspected with `stat`.
//!
//! Beyond "no panic, no runaway allocation, no hang" (libFuzzer's own checks), it asserts the
//! engine's promises: a failed injection leaves nothing at the output path and no temporary
//! file beside it, every error names a file, and a successful one reads back with the injected
//! bytes and mode.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vxn_blobs::squashfs::{self, Compression, InjectOptions, Injection};

/// A private directory per fuzzing process, holding the input, the payload and the output.
struct Scratch {
    dir: tempfile::TempDir,
    input: PathBuf,
    output: PathBuf,
    payload: PathBuf,
}

const PAYLOAD: &[u8] = b"#!/bin/sh\necho injected by the fuzzer\n";
/// Paths that exist in the seed images (tests' trees and the built-in sample).
const PATHS: &[&str] = &[
    "/",
    "/bin/busybox",
    "/bin/sh",
    "/etc/hostname",
    "/etc/passwd",
    "/a",
];

fn scratch() -> &'static Scratch {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    SCRATCH.get_or_init(|| {
        // /dev/shm keeps the per-input file traffic off the disk when it exists.
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::Builder::new()
                .prefix("vxn-fuzz.")
                .tempdir_in("/dev/shm")
        } else {
            tempfile::Builder::new().prefix("vxn-fuzz.").tempdir()
        };
        let dir = base.expect("a scratch directory can be created");
        let payload = dir.path().join("payload");
        std::fs::write(&payload, PAYLOAD).expect("the payload can be written");
        Scratch {
            input: dir.path().join("input.img"),
            output: dir.path().join("out").join("output.img"),
            payload,
            dir,
        }
    })
}

/// Everything in the output directory: after a failure it must be empty.
fn leftovers(s: &Scratch) -> Vec<String> {
    std::fs::read_dir(s.output.parent().unwrap())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn check_error(s: &Scratch, e: &squashfs::Error) {
    let msg = e.to_string();
    let dir = s.dir.path().to_string_lossy();
    assert!(msg.contains(dir.as_ref()), "the error names no file: {msg}");
}

fuzz_target!(|data: &[u8]| {
    let s = scratch();
    std::fs::write(&s.input, data).expect("the input can be written");
    let out_dir = s.output.parent().unwrap();
    let _ = std::fs::remove_dir_all(out_dir);
    std::fs::create_dir(out_dir).expect("the output directory can be made");

    let injections = [
        Injection {
            source: s.payload.clone(),
            dest: "/vxn-init.sh".into(),
            mode: 0o755,
        },
        Injection {
            source: s.payload.clone(),
            dest: "/etc/hostname".into(),
            mode: 0o644,
        },
    ];
    for compression in [Compression::Keep, Compression::Xz] {
        let opts = InjectOptions {
            compression,
            jobs: 1,
            source_date_epoch: Some(1),
            reuse: None,
            block_cache: None,
        };
        // The second injection replaces a file; images without /etc/hostname get only the first.
        let mut result = squashfs::inject(&s.input, &s.output, &injections, &opts, &mut |_, _| {});
        if let Err(squashfs::Error::Destination { .. }) = result {
            result = squashfs::inject(&s.input, &s.output, &injections[..1], &opts, &mut |_, _| {});
        }
        match result {
            Ok(_) => {
                let info = squashfs::stat(&s.output, "/vxn-init.sh")
                    .unwrap_or_else(|e| panic!("a successful injection does not read back: {e}"));
                assert_eq!(info.mode, 0o755);
                assert_eq!(info.size, PAYLOAD.len() as u64);
                let _ = std::fs::remove_file(&s.output);
            }
            Err(e) => {
                check_error(s, &e);
                let left = leftovers(s);
                assert!(
                    left.is_empty(),
                    "a failed injection left {left:?} behind: {e}"
                );
                break;
            }
        }
    }
    for path in PATHS {
        if let Err(e) = squashfs::stat(&s.input, path) {
            check_error(s, &e);
        }
    }
});
