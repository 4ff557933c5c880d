//! Helpers for the CLI tests: run the real `vxn-blobs` binary in a fresh temporary directory, and
//! build a complete input set (rootfs, initramfs, kernel, init scripts, spec) at run time.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use vxn_blobs::demo::{self, COMMON_INIT, DEMO_INITRAMFS, VXN_INIT};
use vxn_blobs::kernel::KernelArch;

/// The SOURCE_DATE_EPOCH of the fixtures: Thu Nov 26 15:18:25 UTC 2026.
pub const EPOCH: u32 = 1_795_706_305;
/// How `date -u` prints [`EPOCH`].
pub const EPOCH_DATE: &str = "Thu Nov 26 15:18:25 UTC 2026";

/// True on CI, where a missing external tool is a failure rather than a skip.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Whether `tool` runs; panics on CI when it does not, so CI never silently skips.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--help")
        .output()
        .map(|_| true)
        .unwrap_or(false);
    assert!(found || !ci(), "{tool} is required when CI=true");
    if !found {
        eprintln!("skipping the {tool} part: {tool} is not installed");
    }
    found
}

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output) -> Run {
        Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts success and returns self.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
        self
    }

    /// Asserts exit code 1 with exactly one error line, and returns that line.
    #[track_caller]
    pub fn error_line(&self) -> String {
        assert_eq!(self.code, Some(1), "expected failure: {self:#?}");
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("vxn-blobs: error: "))
            .collect();
        assert_eq!(errors.len(), 1, "expected one error line: {self:#?}");
        errors[0].to_string()
    }
}

/// A fresh temporary directory to run the binary in.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::tempdir().expect("create a temporary directory"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `vxn-blobs args...` in this directory with a clean environment for the variables the
    /// tool reads.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    /// Like [`TestDir::run`] with extra environment variables.
    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        Run::from(self.command(args, env).output().expect("run vxn-blobs"))
    }

    /// The command, not yet started.
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vxn-blobs"));
        command
            .args(args)
            .current_dir(self.path())
            .env_remove("SOURCE_DATE_EPOCH")
            .env_remove("RUST_LOG");
        for (key, value) in env {
            command.env(key, value);
        }
        command
    }
}

/// Architectures the fixtures cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub fn target_arch(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    pub fn kernel_name(self) -> &'static str {
        self.kernel_arch().image_type()
    }

    pub fn kernel_arch(self) -> KernelArch {
        match self {
            Arch::X86_64 => KernelArch::X86,
            Arch::Aarch64 => KernelArch::Arm64,
        }
    }

    pub fn machine(self) -> &'static str {
        match self {
            Arch::X86_64 => "qemux86-64",
            Arch::Aarch64 => "qemuarm64",
        }
    }

    pub fn multiconfig(self) -> &'static str {
        match self {
            Arch::X86_64 => "vruntime-x86-64",
            Arch::Aarch64 => "vruntime-aarch64",
        }
    }
}

/// A complete input set and its spec under `root`: inputs/, build/, deploy/ and spec.json.
pub struct Fixture {
    pub root: PathBuf,
    pub spec: Value,
}

impl Fixture {
    /// Writes every input for `arch` below `root` and the spec (with relative paths).
    pub fn new(root: &Path, arch: Arch) -> Fixture {
        let inputs = root.join("inputs");
        for dir in [&inputs, &root.join("build"), &root.join("deploy")] {
            fs::create_dir_all(dir).unwrap();
        }
        let fixture = Fixture {
            root: root.to_path_buf(),
            spec: json!({
                "schema": 1,
                "runtime": "vdkr",
                "machine": arch.machine(),
                "multiconfig": arch.multiconfig(),
                "target_arch": arch.target_arch(),
                "blob_arch": arch.target_arch(),
                "initramfs": format!("inputs/vdkr-tiny-initramfs-image-{}.cpio.gz", arch.machine()),
                "rootfs": format!("inputs/vdkr-rootfs-image-{}.rootfs.squashfs", arch.machine()),
                "kernel": format!("inputs/{}", arch.kernel_name()),
                "kernel_name": arch.kernel_name(),
                "inject": [
                    {"source": "inputs/vxn-init.sh", "dest": "/vxn-init.sh", "mode": "0755"},
                    {"source": "inputs/vcontainer-init-common.sh", "dest": "/vcontainer-init-common.sh", "mode": "0755"}
                ],
                "build_dir": "build",
                "deploy_dir": "deploy",
                "source_date_epoch": EPOCH
            }),
        };
        vxn_blobs::squashfs::write_sample_image(&fixture.input("rootfs"), EPOCH).unwrap();
        demo::write_initramfs(&fixture.input("initramfs"), &DEMO_INITRAMFS, EPOCH).unwrap();
        demo::write_fake_kernel(&fixture.input("kernel"), arch.kernel_arch()).unwrap();
        fs::write(inputs.join("vxn-init.sh"), VXN_INIT).unwrap();
        fs::write(inputs.join("vcontainer-init-common.sh"), COMMON_INIT).unwrap();
        fixture.write_spec();
        fixture
    }

    /// Path of the input named by spec key `key` ("initramfs", "rootfs", "kernel").
    pub fn input(&self, key: &str) -> PathBuf {
        self.root.join(self.spec[key].as_str().unwrap())
    }

    /// Path of inject source `i`.
    pub fn inject_source(&self, i: usize) -> PathBuf {
        self.root
            .join(self.spec["inject"][i]["source"].as_str().unwrap())
    }

    pub fn spec_path(&self) -> PathBuf {
        self.root.join("spec.json")
    }

    /// The spec path as a string, for command lines.
    pub fn spec_arg(&self) -> String {
        self.spec_path().display().to_string()
    }

    /// Rewrites spec.json from `self.spec`.
    pub fn write_spec(&self) {
        fs::write(
            self.spec_path(),
            serde_json::to_string_pretty(&self.spec).unwrap(),
        )
        .unwrap();
    }

    /// Sets a top-level spec key and rewrites spec.json.
    pub fn set(&mut self, key: &str, value: Value) {
        self.spec[key] = value;
        self.write_spec();
    }

    pub fn build_dir(&self) -> PathBuf {
        self.root.join("build")
    }

    /// `deploy/vxn/<blob_arch>`.
    pub fn deployed(&self) -> PathBuf {
        self.root
            .join("deploy/vxn")
            .join(self.spec["blob_arch"].as_str().unwrap())
    }

    /// Runs compile (in `dir`) and asserts success.
    pub fn compile(&self, dir: &TestDir) -> Run {
        dir.run(&["compile", "--spec", &self.spec_arg()]).ok()
    }

    /// Runs deploy (in `dir`) and asserts success.
    pub fn deploy(&self, dir: &TestDir) -> Run {
        dir.run(&["deploy", "--spec", &self.spec_arg()]).ok()
    }
}

/// Names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Permission bits of a file (not following symlinks).
pub fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// sha256 of a file, hex.
pub fn sha256(path: &Path) -> String {
    use sha2::Digest;
    let bytes = fs::read(path).unwrap();
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The process umask, read without changing it (umask(2) would, for every thread).
pub fn umask() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .unwrap_or(0o022)
}

/// Where a transcoding run's data blocks came from, as the engine's log line says:
/// "copied C of T blocks from PREVIOUS, took N from the block cache DIR, compressed M (...)",
/// without the first part ("T blocks, ...") when there was no previous output to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sources {
    pub total: u64,
    pub copied: u64,
    pub from_cache: u64,
    pub compressed: u64,
}

/// The [`Sources`] of a run; panics when it has no such line.
#[track_caller]
pub fn block_sources(run: &Run) -> Sources {
    let line = run
        .stderr
        .lines()
        .find(|l| {
            l.starts_with("vxn-blobs: ") && l.contains(" blocks") && l.contains(", compressed ")
        })
        .unwrap_or_else(|| panic!("no line on where the blocks came from: {run:#?}"));
    let words: Vec<&str> = line
        .trim_start_matches("vxn-blobs: ")
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    let number_after = |word: &str| -> Option<u64> {
        let at = words.iter().position(|w| *w == word)?;
        words.get(at + 1).and_then(|n| n.parse().ok())
    };
    let (copied, total) = match number_after("copied") {
        Some(copied) => (copied, number_after("of").unwrap()),
        None => (0, words[0].parse().unwrap()),
    };
    Sources {
        total,
        copied,
        from_cache: number_after("took").unwrap_or(0),
        compressed: number_after("compressed")
            .unwrap_or_else(|| panic!("no count of compressed blocks in {line:?}")),
    }
}
