//! `check`: what would stop a DomU from booting a `vxn/<arch>` directory, found before the boot.
//!
//! The Xen backend and the preinit only test that the files exist, so a rootfs.img whose init is
//! not executable, has a CRLF `#!` line, names an interpreter the image lacks, sources a file
//! that is not there or uses an expansion its shell rejects deploys fine and fails at boot, far
//! from the build that caused it. This module reads the set the way the boot will: the kernel's
//! header for the directory's architecture, the initramfs as the kernel unpacks it, rootfs.img
//! with the engine's checks, and inside it the init script, its `#!` interpreter chain and the
//! files it sources, with symlinks resolved inside the image (where they point after
//! `switch_root`), and what [`crate::shell`] finds the init's shell cannot run in those scripts.
//! It runs nothing: docs/check.md says what that leaves out.
//!
//! Every problem becomes a [`Finding`] naming the file and what to do; only a directory that
//! cannot be read at all is an [`Error`]. [`check_dir`] is the one call for a directory; a writer
//! that stages files under temporary names checks them before renaming with [`check`] on a
//! [`BlobSet::staged`] (deploy does). What the set's files are called and how SHA256SUMS reads
//! come from [`crate::blob_set`]; check knows nothing of the commands that make a set.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::blob_set::{parse_sums_line, BlobSet, Unusable, INITRAMFS, ROOTFS, SUMS};
use crate::initramfs;
use crate::kernel::{self, KernelArch, SUPPORTED_TARGET_ARCHES};
use crate::safe_fs::sha256_reader;
use crate::shell::{self, Shell};
use crate::squashfs::{Kind, View};

/// The init the Xen backend names on the kernel command line (`vcontainer.init=`).
pub const DEFAULT_INIT: &str = "/vxn-init.sh";
/// The inits the vcontainer preinit insists on before it looks at `vcontainer.init`.
const PREINIT_FALLBACKS: [&str; 2] = ["/init", "/sbin/init"];
/// Bytes of a script read to find what it sources; init scripts are a few KiB.
const MAX_SCRIPT_BYTES: usize = 1 << 20;
/// A SHA256SUMS that deploy writes is a few hundred bytes.
const MAX_SUMS_BYTES: u64 = 1 << 20;
/// Bytes of a file the kernel reads to decide how to execute it (BINPRM_BUF_SIZE).
const BINPRM_BUF_SIZE: usize = 256;
/// `#!` interpreters that may themselves be scripts, as the kernel allows (BINPRM_MAX_RECURSION).
const MAX_INTERPRETER_DEPTH: usize = 4;
/// How deep and how many sourced files are followed from one init.
const MAX_SOURCE_DEPTH: usize = 8;
const MAX_SOURCED_FILES: usize = 64;

/// What to check beyond the fixed set.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The architecture, as a BitBake `TARGET_ARCH` (`x86_64`, `aarch64`, ...); `None` takes it
    /// from the directory's name, which is how deploy names it.
    pub arch: Option<String>,
    /// The init scripts to check in rootfs.img; empty means [`DEFAULT_INIT`].
    pub inits: Vec<String>,
}

/// Which check found a problem; stable names for tools (`--json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    /// The kernel, initramfs.cpio.gz or rootfs.img is not there as a regular file.
    MissingFile,
    /// The directory's name says no architecture and none was given.
    UnknownArch,
    /// SHA256SUMS cannot be read, is malformed or leaves out a boot file.
    SumsInvalid,
    /// A file does not match SHA256SUMS.
    SumsMismatch,
    /// The kernel lacks its architecture's boot header.
    KernelFormat,
    /// initramfs.cpio.gz is not one gzip stream of a newc cpio archive.
    InitramfsFormat,
    /// The initramfs has no executable /init.
    InitramfsInit,
    /// rootfs.img is not a squashfs the engine can read.
    RootfsFormat,
    /// rootfs.img has neither an executable /init nor /sbin/init, which the preinit requires.
    PreinitInit,
    /// The init script is not in rootfs.img.
    InitMissing,
    /// The init is a symlink, a directory or another non-file.
    InitNotFile,
    /// The init has no execute bit.
    InitNotExecutable,
    /// The init is not owned by 0:0.
    InitOwner,
    /// The init is neither a `#!` script the kernel can start nor an ELF binary.
    InitFormat,
    /// The `#!` line holds a carriage return.
    ShebangCr,
    /// A `#!` interpreter is not in rootfs.img.
    InterpreterMissing,
    /// A `#!` interpreter is not an executable regular file.
    InterpreterNotExecutable,
    /// A `#!` interpreter is a script the kernel will not start (loop, nesting, format).
    InterpreterFormat,
    /// A file sourced by absolute path is not in rootfs.img.
    SourceMissing,
    /// The init or a file it sources uses an expansion its `#!` shell rejects (bash's
    /// `${var/pattern/string}` under dash).
    ShellUnsupported,
}

/// One problem: which file, which path inside it, and a sentence saying what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The file of the directory it concerns (e.g. `.../x86_64/rootfs.img`).
    pub file: PathBuf,
    /// The path inside rootfs.img or the initramfs it concerns, when there is one.
    pub path: Option<String>,
    pub code: Code,
    /// The whole finding as a sentence; it names the file and what to do.
    pub message: String,
}

/// The outcome of a check.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The directory checked (for a staged set: the one it is about to be installed in).
    pub dir: PathBuf,
    /// The architecture the kernel was checked for, when one was known.
    pub arch: Option<String>,
    /// Whether nothing was found; the same as `findings` being empty.
    pub ok: bool,
    pub findings: Vec<Finding>,
    /// What was checked and passed, one short line per file.
    pub checked: Vec<String>,
}

/// Why a directory could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The path is missing or is not a directory.
    #[error("{} {problem}; give a vxn/<arch> directory such as deploy/vxn/x86_64 or /usr/share/vxn/x86_64", dir.display())]
    Directory { dir: PathBuf, problem: String },
    /// Check found problems (the command has listed them).
    #[error("{} would not boot as it is: check found {count} problem{}, listed above", dir.display(), if *count == 1 { "" } else { "s" })]
    Problems { dir: PathBuf, count: usize },
}

/// Checks the `vxn/<arch>` directory `dir` as the boot will use it.
pub fn check_dir(dir: &Path, options: &Options) -> Result<Report, Error> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(check(&BlobSet::installed(dir), options)),
        Ok(_) => Err(Error::Directory {
            dir: dir.to_path_buf(),
            problem: "is not a directory".into(),
        }),
        Err(e) => Err(Error::Directory {
            dir: dir.to_path_buf(),
            problem: if e.kind() == std::io::ErrorKind::NotFound {
                "does not exist".into()
            } else {
                format!("cannot be read ({e})")
            },
        }),
    }
}

/// Checks `set`. Every problem is a finding; reading never stops at the first one.
pub fn check(set: &BlobSet, options: &Options) -> Report {
    let mut c = Checker {
        set,
        findings: Vec::new(),
        checked: Vec::new(),
    };
    let arch = c.arch(options);
    c.sums(arch.as_ref().map(|(a, _)| *a));
    if let Some((kernel_arch, name)) = &arch {
        c.kernel(*kernel_arch, name);
    }
    c.initramfs();
    let inits: Vec<String> = if options.inits.is_empty() {
        vec![DEFAULT_INIT.to_string()]
    } else {
        options.inits.clone()
    };
    c.rootfs(&inits);
    Report {
        dir: set.dir().to_path_buf(),
        arch: arch.map(|(_, name)| name),
        ok: c.findings.is_empty(),
        findings: c.findings,
        checked: c.checked,
    }
}

impl Report {
    /// The report as an error when it has findings, for callers that stop on them.
    pub fn into_result(self) -> Result<Report, Error> {
        if self.ok {
            Ok(self)
        } else {
            Err(Error::Problems {
                dir: self.dir,
                count: self.findings.len(),
            })
        }
    }
}

struct Checker<'a> {
    set: &'a BlobSet,
    findings: Vec<Finding>,
    checked: Vec<String>,
}

impl Checker<'_> {
    /// The final path of `name`, for messages.
    fn shown(&self, name: &str) -> PathBuf {
        self.set.dir().join(name)
    }

    fn find(&mut self, name: &str, path: Option<&str>, code: Code, message: String) {
        self.findings.push(Finding {
            file: self.shown(name),
            path: path.map(str::to_string),
            code,
            message,
        });
    }

    /// The architecture from the options, else from the directory's name.
    fn arch(&mut self, options: &Options) -> Option<(KernelArch, String)> {
        let name = match &options.arch {
            Some(name) => name.clone(),
            None => self
                .set
                .dir()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        if let Some(arch) = KernelArch::from_target_arch(&name) {
            return Some((arch, name));
        }
        let message = format!(
            "{} is named {name:?}, which says no architecture, so the kernel cannot be checked; name the directory after it or pass --arch (one of {SUPPORTED_TARGET_ARCHES})",
            self.set.dir().display()
        );
        self.findings.push(Finding {
            file: self.set.dir().to_path_buf(),
            path: None,
            code: Code::UnknownArch,
            message,
        });
        None
    }

    /// SHA256SUMS, when there is one: every line well-formed, every listed file matching, and
    /// every boot file listed.
    fn sums(&mut self, arch: Option<KernelArch>) {
        let shown = self.shown(SUMS);
        let file = match self.set.open(SUMS) {
            Ok(file) => file,
            Err(Unusable::Missing) => return,
            Err(why) => {
                let message = format!("{} {why}; redeploy, or remove it", shown.display());
                return self.find(SUMS, None, Code::SumsInvalid, message);
            }
        };
        let mut text = Vec::new();
        if let Err(e) = file.take(MAX_SUMS_BYTES + 1).read_to_end(&mut text) {
            let message = format!("{} cannot be read ({e}); redeploy", shown.display());
            return self.find(SUMS, None, Code::SumsInvalid, message);
        }
        if text.len() as u64 > MAX_SUMS_BYTES {
            let message = format!(
                "{} is larger than {} MiB, which no deploy writes; redeploy",
                shown.display(),
                MAX_SUMS_BYTES >> 20
            );
            return self.find(SUMS, None, Code::SumsInvalid, message);
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        let mut listed = Vec::new();
        let before = self.findings.len();
        for (i, line) in text.lines().enumerate() {
            let plain =
                |name: &str| !name.is_empty() && name != "." && name != ".." && !name.contains('/');
            match parse_sums_line(line) {
                Some((sha, name)) if plain(name) => {
                    listed.push((sha.to_string(), name.to_string()))
                }
                Some((_, name)) => {
                    let message = format!(
                        "{} line {} names {name:?}, which is not a file of this directory; redeploy",
                        shown.display(),
                        i + 1
                    );
                    self.find(SUMS, None, Code::SumsInvalid, message);
                }
                None => {
                    let message = format!(
                        "{} line {} is not \"<sha256>  <name>\" as sha256sum writes it; redeploy",
                        shown.display(),
                        i + 1
                    );
                    self.find(SUMS, None, Code::SumsInvalid, message);
                }
            }
        }
        for (expected, name) in &listed {
            let shown_file = self.shown(name);
            let actual = self
                .set
                .open(name)
                .and_then(|f| sha256_reader(f).map_err(Unusable::Unreadable));
            match actual {
                Ok((sha, _)) if sha == *expected => {}
                Ok((sha, _)) => {
                    let message = format!(
                        "{} does not match {SUMS} (its sha256 is {sha}, {SUMS} says {expected}): it changed after deploy; deploy again",
                        shown_file.display()
                    );
                    self.find(name, None, Code::SumsMismatch, message);
                }
                Err(why) => {
                    let message = format!(
                        "{} is listed in {SUMS} but {why}; deploy again",
                        shown_file.display()
                    );
                    self.find(name, None, Code::SumsMismatch, message);
                }
            }
        }
        let mut boot_files = vec![INITRAMFS, ROOTFS];
        if let Some(arch) = arch {
            boot_files.insert(0, arch.image_type());
        }
        for name in boot_files {
            let present = self.set.open(name).is_ok();
            if present && !listed.iter().any(|(_, n)| n == name) {
                let message = format!(
                    "{} does not list {name}, so nothing vouches for it; deploy again",
                    shown.display()
                );
                self.find(SUMS, None, Code::SumsInvalid, message);
            }
        }
        if self.findings.len() == before {
            self.checked
                .push(format!("{SUMS}: {} files match", listed.len()));
        }
    }

    /// The file a boot needs under `name`, or a finding saying it is not there.
    fn required(&mut self, name: &str, what: &str) -> Option<File> {
        match self.set.open(name) {
            Ok(file) => Some(file),
            Err(why) => {
                let message = format!(
                    "{} {why}; the Xen backend boots {what} from this directory, so deploy a complete set",
                    self.shown(name).display()
                );
                self.find(name, None, Code::MissingFile, message);
                None
            }
        }
    }

    fn kernel(&mut self, arch: KernelArch, arch_name: &str) {
        let name = arch.image_type();
        let Some(file) = self.required(name, "the kernel") else {
            return;
        };
        match kernel::check_reader(file, &self.shown(name), arch, arch_name) {
            Ok(()) => self
                .checked
                .push(format!("{name}: a {name} for {arch_name}")),
            Err(e) => self.find(name, None, Code::KernelFormat, e.to_string()),
        }
    }

    fn initramfs(&mut self) {
        let name = INITRAMFS;
        let Some(file) = self.required(name, "the initramfs") else {
            return;
        };
        let shown = self.shown(name);
        let summary = match initramfs::check(file, &shown) {
            Ok(summary) => summary,
            Err(e) => return self.find(name, None, Code::InitramfsFormat, e.to_string()),
        };
        let problem = match summary.init_mode {
            None => Some("has no /init, so the kernel finds nothing to run and panics".to_string()),
            Some(mode) if mode & 0o170000 == 0o120000 => None,
            Some(mode) if mode & 0o170000 != 0o100000 => {
                Some("has an /init that is not a regular file, so the kernel cannot run it".into())
            }
            Some(mode) if mode & 0o111 == 0 => Some(format!(
                "has an /init of mode {:04o}, not executable, so the kernel cannot run it and panics",
                mode & 0o7777
            )),
            Some(_) => None,
        };
        match problem {
            Some(problem) => {
                let message = format!(
                    "{} {problem}; rebuild the tiny initramfs with its preinit as /init",
                    shown.display()
                );
                self.find(name, Some("/init"), Code::InitramfsInit, message);
            }
            None => self.checked.push(format!(
                "{name}: one gzip stream, a newc cpio of {} entries with /init",
                summary.entries
            )),
        }
    }

    fn rootfs(&mut self, inits: &[String]) {
        let name = ROOTFS;
        if self
            .required(name, "rootfs.img (as the DomU's first disk)")
            .is_none()
        {
            return;
        }
        let shown = self.shown(name);
        let source = self.set.source(name).unwrap_or_else(|| shown.clone());
        let view = match View::open_as(&source, &shown) {
            Ok(view) => view,
            Err(e) => return self.find(name, None, Code::RootfsFormat, e.to_string()),
        };
        let before = self.findings.len();
        let executable = |path: &str| {
            view.lookup(path, true)
                .is_ok_and(|e| e.kind == Kind::File && e.mode & 0o111 != 0)
        };
        if !PREINIT_FALLBACKS.iter().any(|p| executable(p)) {
            let message = format!(
                "{} has no executable /init or /sbin/init: the vcontainer preinit stops (\"No init found on rootfs\") before it looks at vcontainer.init; the rootfs image must ship an init",
                shown.display()
            );
            self.find(name, None, Code::PreinitInit, message);
        }
        let mut summaries = Vec::new();
        for init in inits {
            let mut script = Script {
                checker: self,
                view: &view,
                rootfs: shown.clone(),
                summary: Vec::new(),
                shell: None,
            };
            script.init(init);
            summaries.push(format!("{init} {}", script.summary.join(", ")));
        }
        if self.findings.len() == before {
            self.checked.push(format!(
                "{name}: squashfs ({}, {} inodes); {}",
                view.compressor_name(),
                view.inode_count(),
                summaries.join("; ")
            ));
        }
    }
}

/// The checks of one init script inside rootfs.img.
struct Script<'c, 'a, 'v> {
    checker: &'c mut Checker<'a>,
    view: &'v View,
    rootfs: PathBuf,
    /// What passed, for the report ("runs /bin/sh", "sources /x").
    summary: Vec<String>,
    /// The init's `#!` shell, when it is one that lacks bash's expansions, and how messages name
    /// it ("/bin/sh (/bin/dash)").
    shell: Option<(Shell, String)>,
}

impl Script<'_, '_, '_> {
    fn find(&mut self, path: &str, code: Code, what: String) {
        let message = format!("{}: {what}", self.rootfs.display());
        self.checker.find(ROOTFS, Some(path), code, message);
    }

    fn init(&mut self, init: &str) {
        let fix = "inject it with mode 0755 (the spec's \"inject\")";
        let entry = match self.view.lookup(init, false) {
            Ok(entry) => entry,
            Err(e) => {
                let what = format!(
                    "{init} is not there ({}): the preinit does not find vcontainer.init={init} and boots /init or /sbin/init instead, so the container commands never run; {fix}",
                    e
                );
                return self.find(init, Code::InitMissing, what);
            }
        };
        if entry.kind == Kind::Symlink {
            let target = String::from_utf8_lossy(entry.target.as_deref().unwrap_or_default());
            let what = format!(
                "{init} is a symlink to {target}, not a regular file: the preinit tests it from the initramfs, where that can be another file or none; install the script itself ({fix})"
            );
            return self.find(init, Code::InitNotFile, what);
        }
        if entry.kind != Kind::File {
            let what = format!("{init} is a {}, not a regular file; {fix}", entry.kind);
            return self.find(init, Code::InitNotFile, what);
        }
        if entry.mode & 0o111 == 0 {
            let what = format!(
                "{init} has mode {:04o}, not executable: the preinit's [ -x ] test fails and it boots /init or /sbin/init instead, so the container commands never run; {fix}",
                entry.mode
            );
            self.find(init, Code::InitNotExecutable, what);
        }
        if (entry.uid, entry.gid) != (0, 0) {
            let what = format!(
                "{init} is owned by {}:{}, not 0:0: that user can change what the DomU runs as root; inject it with vxn-blobs, which installs files as 0:0",
                entry.uid, entry.gid
            );
            self.find(init, Code::InitOwner, what);
        }
        let text = match self.view.read(&entry, MAX_SCRIPT_BYTES) {
            Ok(text) => text,
            Err(e) => {
                return self
                    .checker
                    .find(ROOTFS, Some(init), Code::RootfsFormat, e.to_string())
            }
        };
        self.executable(init, &entry.path, &text);
        self.constructs(init, init, &text);
        let mut visited = vec![entry.path.clone()];
        self.sources(init, &text, 0, &mut visited);
    }

    /// Whether the kernel can start `init` (resolved to `path`, leading bytes `head`): an ELF
    /// binary, or a `#!` script whose interpreter chain ends in one, as the kernel follows it.
    fn executable(&mut self, init: &str, path: &str, head: &[u8]) {
        // The files met so far: the path each resolved to, and how messages name it.
        let mut chain: Vec<(String, String)> = vec![(path.to_string(), init.to_string())];
        let mut head = head.to_vec();
        loop {
            let (path, shown) = chain.last().cloned().unwrap_or_default();
            let (who, code) = match chain.len() {
                1 => (shown, Code::InitFormat),
                2 => (
                    format!("{shown}, the #! interpreter of {init},"),
                    Code::InterpreterFormat,
                ),
                _ => (
                    format!("{shown}, in the #! chain of {init},"),
                    Code::InterpreterFormat,
                ),
            };
            if head.starts_with(b"\x7fELF") {
                return;
            }
            let shebang = match parse_shebang(&head) {
                Ok(shebang) => shebang,
                Err(why) => return self.find(&path, code, format!("{who} {why}")),
            };
            if shebang.line.contains(&b'\r') {
                let what = format!(
                    "{who} has a carriage return in its #! line {:?} (CRLF line endings): the kernel looks for an interpreter named {:?}, which does not exist; convert the file to LF line endings (dos2unix)",
                    String::from_utf8_lossy(&shebang.line),
                    String::from_utf8_lossy(&shebang.interpreter)
                );
                self.find(&path, Code::ShebangCr, what);
            }
            let interpreter = String::from_utf8_lossy(&strip_cr(&shebang.interpreter)).into_owned();
            let entry = match self.view.lookup(&interpreter, true) {
                Ok(entry) => entry,
                Err(e) => {
                    let instead = if interpreter == "/bin/sh" {
                        ""
                    } else {
                        "use one the image has, such as #!/bin/sh, or "
                    };
                    let what = format!(
                        "{who} names the interpreter {interpreter}, which is not in the image ({e}): the kernel cannot start it (ENOENT); {instead}add it to the rootfs image"
                    );
                    return self.find(&path, Code::InterpreterMissing, what);
                }
            };
            if entry.kind != Kind::File || entry.mode & 0o111 == 0 {
                let what = format!(
                    "{who} names the interpreter {interpreter}, which is {} in the image: the kernel cannot start it (EACCES)",
                    if entry.kind == Kind::File {
                        format!("a file of mode {:04o}, not executable,", entry.mode)
                    } else {
                        format!("a {}", entry.kind)
                    }
                );
                return self.find(&path, Code::InterpreterNotExecutable, what);
            }
            let next = if entry.path == interpreter {
                interpreter
            } else {
                format!("{interpreter} ({})", entry.path)
            };
            if chain.len() == 1 {
                self.summary.push(format!("runs {next}"));
                self.shell = Shell::from_path(&entry.path).map(|shell| (shell, next.clone()));
            }
            head = match self.view.read(&entry, BINPRM_BUF_SIZE) {
                Ok(head) => head,
                Err(e) => {
                    return self.checker.find(
                        ROOTFS,
                        Some(&entry.path),
                        Code::RootfsFormat,
                        e.to_string(),
                    )
                }
            };
            if head.starts_with(b"#!") {
                let names: Vec<&str> = chain.iter().map(|(_, shown)| shown.as_str()).collect();
                if chain.iter().any(|(p, _)| *p == entry.path) {
                    let what = format!(
                        "{init}'s #! interpreters loop ({} -> {next}): the kernel gives up (ELOOP); point the #! lines at a binary",
                        names.join(" -> ")
                    );
                    return self.find(&entry.path, Code::InterpreterFormat, what);
                }
                if chain.len() > MAX_INTERPRETER_DEPTH {
                    let what = format!(
                        "{init}'s #! interpreters ({} -> {next}) nest deeper than the {MAX_INTERPRETER_DEPTH} levels the kernel follows (ELOOP); point the #! line at a binary",
                        names.join(" -> ")
                    );
                    return self.find(&entry.path, Code::InterpreterFormat, what);
                }
            }
            chain.push((entry.path.clone(), next));
        }
    }

    /// Every file `who` sources by absolute path must be in the image; their own sources too.
    fn sources(&mut self, who: &str, text: &[u8], depth: usize, visited: &mut Vec<String>) {
        for path in sourced_paths(text) {
            match self.view.lookup(&path, true) {
                Ok(entry) if entry.kind == Kind::File => {
                    if visited.contains(&entry.path) {
                        continue;
                    }
                    visited.push(entry.path.clone());
                    self.summary.push(format!("sources {path}"));
                    if depth + 1 >= MAX_SOURCE_DEPTH || visited.len() >= MAX_SOURCED_FILES {
                        continue;
                    }
                    match self.view.read(&entry, MAX_SCRIPT_BYTES) {
                        Ok(inner) => {
                            let sourced = format!("{path}, which {who} sources,");
                            self.constructs(&path, &sourced, &inner);
                            self.sources(&path, &inner, depth + 1, visited)
                        }
                        Err(e) => self.checker.find(
                            ROOTFS,
                            Some(&path),
                            Code::RootfsFormat,
                            e.to_string(),
                        ),
                    }
                }
                Ok(entry) => {
                    let what = format!(
                        "{who} sources {path}, which is a {} in the image, not a file: sh stops at that line; inject the file (the spec's \"inject\")",
                        entry.kind
                    );
                    self.find(&path, Code::SourceMissing, what);
                }
                Err(e) => {
                    let what = format!(
                        "{who} sources {path}, which is not in the image ({}): sh stops at that line; inject it too (the spec's \"inject\")",
                        e
                    );
                    self.find(&path, Code::SourceMissing, what);
                }
            }
        }
    }
}

impl Script<'_, '_, '_> {
    /// What the init's shell cannot run in `text`, the init or a file it sources (at `path`,
    /// named `who` in the message), grouped by construct.
    fn constructs(&mut self, path: &str, who: &str, text: &[u8]) {
        let Some((shell, named)) = self.shell.clone() else {
            return;
        };
        let found = shell::unsupported(text, shell);
        if found.is_empty() {
            return;
        }
        let mut groups: Vec<(&str, &str, Vec<usize>)> = Vec::new();
        for u in &found {
            match groups.iter_mut().find(|(text, _, _)| *text == u.text) {
                Some((_, _, lines)) => lines.push(u.line),
                None => groups.push((&u.text, u.kind, vec![u.line])),
            }
        }
        const SHOWN: usize = 4;
        let mut uses: Vec<String> = groups
            .iter()
            .take(SHOWN)
            .map(|(text, kind, lines)| {
                let lines: Vec<String> = lines.iter().map(usize::to_string).collect();
                let s = if lines.len() == 1 { "" } else { "s" };
                format!("{text} ({kind}) at line{s} {}", lines.join(", "))
            })
            .collect();
        if groups.len() > SHOWN {
            uses.push(format!("{} more", groups.len() - SHOWN));
        }
        let name = shell.name();
        let what = format!(
            "{who} runs under {named}, which is {name}, and uses {}; {name} has no such expansion: it stops with \"Bad substitution\" there, ending the script (or the $(...) around it, which then yields nothing), so what follows does not run as written; make /bin/sh busybox or bash in the rootfs image, or use POSIX expansions in the script",
            uses.join(", ")
        );
        self.find(path, Code::ShellUnsupported, what);
    }
}

fn strip_cr(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().copied().filter(|&b| b != b'\r').collect()
}

/// A `#!` line as the kernel's binfmt_script reads it.
#[derive(Debug, PartialEq, Eq)]
struct Shebang {
    /// The line after `#!`, up to the newline (or the end of what the kernel reads).
    line: Vec<u8>,
    interpreter: Vec<u8>,
}

/// Parses the start of a file the way the kernel does (fs/binfmt_script.c): the first
/// [`BINPRM_BUF_SIZE`] bytes, zero-padded; the interpreter is the first word after `#!`, words
/// being separated by spaces, tabs or NUL, and the line ending at the first newline. The error
/// completes a sentence that starts with the file's name.
fn parse_shebang(head: &[u8]) -> Result<Shebang, String> {
    if !head.starts_with(b"#!") {
        return Err(
            "starts with neither #! nor an ELF header: the kernel cannot execute it (ENOEXEC); start it with a #! line such as #!/bin/sh".into(),
        );
    }
    let mut buf = [0u8; BINPRM_BUF_SIZE];
    let n = head.len().min(BINPRM_BUF_SIZE);
    buf[..n].copy_from_slice(&head[..n]);
    let separator = |b: u8| b == b' ' || b == b'\t' || b == 0;
    let end = match buf.iter().position(|&b| b == b'\n') {
        Some(end) => end,
        None => {
            // No newline in what the kernel reads: it accepts the line only if the interpreter
            // ends inside it.
            let last = BINPRM_BUF_SIZE - 1;
            let start = buf[2..last].iter().position(|&b| b != b' ' && b != b'\t');
            let ends = start.is_some_and(|s| buf[2 + s..last].iter().any(|&b| separator(b)));
            if !ends {
                return Err(format!(
                    "has a #! line longer than the {BINPRM_BUF_SIZE} bytes the kernel reads, so the kernel cannot execute it (ENOEXEC); shorten it"
                ));
            }
            last
        }
    };
    let line = &buf[2..end];
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    let words: Vec<&[u8]> = line
        .split(|&b| separator(b))
        .filter(|w| !w.is_empty())
        .collect();
    let Some(interpreter) = words.first() else {
        return Err(
            "has a #! line that names no interpreter, so the kernel cannot execute it (ENOEXEC); write #!/bin/sh".into(),
        );
    };
    Ok(Shebang {
        line: line.to_vec(),
        interpreter: interpreter.to_vec(),
    })
}

/// Absolute, literal paths that a shell script sources (`. /path`, `source /path`) at the start
/// of a command. Paths built from variables or globs, relative ones, and anything inside
/// here-documents or multi-line strings are beyond a reader that does not run the script.
fn sourced_paths(text: &[u8]) -> Vec<String> {
    // Reserved words after which a new command starts.
    const LEADERS: [&str; 9] = [
        "then", "do", "else", "elif", "if", "while", "until", "!", "{",
    ];
    let mut found: Vec<String> = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let words = shell_words(line);
        let mut command_start = true;
        for (i, word) in words.iter().enumerate() {
            let Word::Text { text, literal } = word else {
                command_start = true;
                continue;
            };
            if !command_start {
                continue;
            }
            if *literal && LEADERS.contains(&text.as_str()) {
                continue;
            }
            command_start = false;
            if *literal && (text == "." || text == "source") {
                if let Some(Word::Text {
                    text: path,
                    literal: true,
                }) = words.get(i + 1)
                {
                    if path.starts_with('/') && !found.contains(path) {
                        found.push(path.clone());
                    }
                }
            }
        }
    }
    found
}

/// A shell word or a command separator.
#[derive(Debug, PartialEq, Eq)]
enum Word {
    /// A word with quotes removed; `literal` is false when the shell would expand it.
    Text { text: String, literal: bool },
    /// `;`, `&`, `|`, `(` or `)`: a command may start after it.
    Separator,
}

/// Splits one line into words and separators, as far as that can be done without running it.
fn shell_words(line: &[u8]) -> Vec<Word> {
    let mut words = Vec::new();
    let mut current: Option<(Vec<u8>, bool)> = None;
    let mut i = 0;
    let flush = |current: &mut Option<(Vec<u8>, bool)>, words: &mut Vec<Word>| {
        if let Some((text, literal)) = current.take() {
            words.push(Word::Text {
                text: String::from_utf8_lossy(&text).into_owned(),
                literal,
            });
        }
    };
    while i < line.len() {
        let b = line[i];
        match b {
            b' ' | b'\t' | b'\r' => flush(&mut current, &mut words),
            b';' | b'&' | b'|' | b'(' | b')' => {
                flush(&mut current, &mut words);
                words.push(Word::Separator);
            }
            b'#' if current.is_none() => break,
            b'\'' | b'"' => {
                let word = current.get_or_insert_with(|| (Vec::new(), true));
                let close = line[i + 1..].iter().position(|&c| c == b);
                let inner = &line[i + 1..close.map_or(line.len(), |c| i + 1 + c)];
                if close.is_none() || (b == b'"' && inner.iter().any(|c| b"$`\\".contains(c))) {
                    word.1 = false;
                }
                word.0.extend_from_slice(inner);
                i = close.map_or(line.len(), |c| i + 1 + c);
            }
            _ => {
                let word = current.get_or_insert_with(|| (Vec::new(), true));
                if b"$`\\*?[~".contains(&b) {
                    word.1 = false;
                }
                word.0.push(b);
            }
        }
        i += 1;
    }
    flush(&mut current, &mut words);
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebangs_parse_as_the_kernel_reads_them() {
        let parse = |s: &[u8]| parse_shebang(s).map(|s| s.interpreter);
        assert_eq!(parse(b"#!/bin/sh\necho\n"), Ok(b"/bin/sh".to_vec()));
        assert_eq!(parse(b"#! \t/bin/sh -e\n"), Ok(b"/bin/sh".to_vec()));
        assert_eq!(parse(b"#!/bin/sh"), Ok(b"/bin/sh".to_vec()));
        assert_eq!(parse(b"#!/bin/sh\r\n"), Ok(b"/bin/sh\r".to_vec()));
        assert!(parse(b"#!\n").is_err());
        assert!(parse(b"#!   \n").is_err());
        assert!(parse(b"echo hi\n").is_err());
        let long = [b"#!/".as_slice(), &[b'a'; 300]].concat();
        assert!(parse(&long).unwrap_err().contains("256 bytes"));
        // A long argument is cut by the kernel, not refused.
        let long_arg = [b"#!/bin/sh ".as_slice(), &[b'x'; 300]].concat();
        assert_eq!(parse(&long_arg), Ok(b"/bin/sh".to_vec()));
    }

    #[test]
    fn sourced_paths_are_found_where_commands_start() {
        let script = b"#!/bin/sh\n\
            . /vcontainer-init-common.sh\n\
            source '/etc/a.sh' # a comment . /not-this\n\
            if true; then . \"/etc/b.sh\"; fi\n\
            [ -f /x ] && . /etc/c.sh\n\
            echo . /not-a-source\n\
            . $DIR/skipped.sh\n\
            . relative.sh\n\
            . \"/etc/$name.sh\"\n\
            # . /commented\n\
            . /vcontainer-init-common.sh\n";
        assert_eq!(
            sourced_paths(script),
            [
                "/vcontainer-init-common.sh",
                "/etc/a.sh",
                "/etc/b.sh",
                "/etc/c.sh"
            ]
        );
    }
}
