//! `compile`: the seed's do_compile (initramfs, rootfs with the init scripts, kernel) as one
//! checked, atomic and reusable step.
//!
//! The seed's task was `nostamp`, so every build redid the slow xz repack. Here compile records a
//! digest of everything its outputs depend on; a rerun that finds the same digest and outputs
//! that still hash to what was recorded reuses them, and says so. The task keeps its meaning
//! (the outputs are exactly what a rebuild would give) at the cost of reading the files once.
//!
//! Everything lands in `build_dir` atomically: each output is staged in a temporary file beside
//! its final name and only renamed into place once every input has been checked and the inputs
//! are known not to have changed meanwhile; the state file that makes the outputs count as a
//! completed compile is written last. An exclusive lock on `build_dir` serializes concurrent
//! compiles and deploys. Nothing is followed through a symlink planted at an output path: temp
//! files are created with `O_EXCL` (which refuses symlinks) and renamed over whatever is there.
//!
//! The same file helpers (lock, staging, hashing, the state record) serve `deploy`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use log::{debug, info, warn};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tempfile::TempPath;

use crate::error::Error;
use crate::initramfs;
use crate::kernel;
use crate::spec::Spec;
use crate::squashfs::{self, InjectOptions, InjectReport};

/// The tool identity that goes into the digest: the version and a digest of the running
/// executable, so that neither a new release nor a rebuilt development binary (same version,
/// changed code) reuses outputs an older build made.
pub fn tool_identity() -> &'static str {
    static TOOL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOOL.get_or_init(|| {
        let version = concat!("vxn-blobs ", env!("CARGO_PKG_VERSION"));
        let exe = std::env::current_exe()
            .and_then(File::open)
            .and_then(sha256_reader);
        match exe {
            Ok((sha, _)) => format!("{version} (executable sha256 {})", &sha[..16]),
            Err(_) => version.to_string(),
        }
    })
}
/// The record of the last completed compile, in `build_dir`.
pub const STATE_FILE: &str = ".vxn-blobs-state.json";
/// The lock file that serializes compiles and deploys on one `build_dir`.
pub const LOCK_FILE: &str = ".vxn-blobs.lock";
/// Prefix of every temporary file the tool creates; leftovers of a killed run are removed by the
/// next run that holds the lock, and nothing else is ever removed.
pub const TEMP_PREFIX: &str = ".vxn-blobs-tmp-";
/// Output names in `build_dir`.
pub const INITRAMFS_OUTPUT: &str = "initramfs.cpio.gz";
pub const ROOTFS_OUTPUT: &str = "rootfs.img";
pub const KERNEL_OUTPUT: &str = "kernel";
/// Mode of every output; deploy hardlinks them, so they already have the deployed mode.
pub(crate) const OUTPUT_MODE: u32 = 0o644;
/// Version of the state file's layout.
const STATE_FORMAT: u32 = 1;
/// A state file is a few hundred bytes; anything far larger is not ours.
const MAX_STATE_BYTES: u64 = 1 << 20;
/// Read size for hashing and copying.
const CHUNK: usize = 1 << 20;

/// What compile recorded about one output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OutputRecord {
    pub sha256: String,
    pub size: u64,
}

/// The record of a completed compile (`build_dir/.vxn-blobs-state.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format: u32,
    /// [`tool_identity`] of the compile.
    pub tool: String,
    /// sha256 over the tool, the spec and every input (see `Fingerprint` in the source).
    pub digest: String,
    /// sha256 of [`Spec::canonical_bytes`], so deploy can tell whether it has the same spec.
    pub spec_sha256: String,
    /// sha256 of each input by label ("initramfs", "rootfs", "kernel", `inject[0]`...), kept to
    /// say which input changed when a rerun rebuilds.
    pub inputs: BTreeMap<String, String>,
    /// The outputs by name in `build_dir`; "kernel" only when one was compiled.
    pub outputs: BTreeMap<String, OutputRecord>,
}

/// What a compile did.
#[derive(Debug, Clone)]
pub struct CompileReport {
    /// True when the outputs of an earlier identical compile were kept.
    pub reused: bool,
    /// Why it rebuilt or reused, in words.
    pub reason: String,
    pub digest: String,
    pub outputs: BTreeMap<String, OutputRecord>,
    /// The initramfs check, when it ran (not on reuse).
    pub initramfs: Option<initramfs::Summary>,
    /// The engine's report, when it ran (not on reuse).
    pub inject: Option<InjectReport>,
}

/// Runs compile for `spec`. `progress` receives percentages, increasing, ending with 100.
pub fn compile(spec: &Spec, progress: &mut dyn FnMut(u8)) -> Result<CompileReport, Error> {
    let build_dir = &spec.build_dir;
    require_dir(build_dir, "build_dir")?;
    let _lock = lock_dir(build_dir)?;
    remove_stale_temps(build_dir);

    let kernel_present = locate_inputs(spec)?;
    let previous = State::read(build_dir);
    let (fingerprint, outputs_ok) = rayon::join(
        || Fingerprint::compute(spec, kernel_present),
        || match &previous {
            Ok(state) => state.verify_outputs(build_dir),
            Err(reason) => Err(reason.clone()),
        },
    );
    let fingerprint = fingerprint?;
    let reason = match (&previous, outputs_ok) {
        (Ok(state), Ok(())) if state.digest == fingerprint.digest => {
            let reason = format!(
                "inputs, spec and tool are unchanged (digest {}) and the outputs still match their recorded sha256",
                short(&fingerprint.digest)
            );
            info!("reusing the outputs in {}: {reason}", build_dir.display());
            progress(100);
            return Ok(CompileReport {
                reused: true,
                reason,
                digest: fingerprint.digest,
                outputs: state.outputs.clone(),
                initramfs: None,
                inject: None,
            });
        }
        (Ok(state), Ok(())) => fingerprint.describe_change(state),
        (Ok(state), Err(why)) if state.digest == fingerprint.digest => why,
        (Ok(state), Err(_)) => fingerprint.describe_change(state),
        (Err(why), _) => why.clone(),
    };
    info!("compiling into {}: {reason}", build_dir.display());
    progress(0);

    let (initramfs_temp, initramfs_record, summary) = stage_initramfs(spec)?;
    if !summary.has_init {
        warn!(
            "initramfs {} has no /init, so the kernel will find nothing to run unless its command line sets rdinit=",
            spec.initramfs.display()
        );
    }
    info!(
        "initramfs {}: a gzip newc cpio archive of {} entries, {} bytes",
        spec.initramfs.display(),
        summary.entries,
        initramfs_record.size
    );
    let kernel_stage = if kernel_present {
        let staged = stage_kernel(spec)?;
        info!(
            "kernel {}: a {} for {}, {} bytes",
            spec.kernel.display(),
            spec.kernel_arch.image_type(),
            spec.target_arch,
            staged.1.size
        );
        Some(staged)
    } else {
        None
    };
    let (rootfs_temp, rootfs_record, report) = stage_rootfs(spec, progress)?;
    info!(
        "rootfs {}: {} inodes, {} -> {}{}, {} bytes",
        spec.rootfs.display(),
        report.inode_count,
        report.input_compressor,
        report.output_compressor,
        if report.data_kept_raw {
            " (data blocks kept as they were)"
        } else {
            ""
        },
        rootfs_record.size
    );

    // The state must describe the bytes that were read: if an input changed while it was being
    // copied or injected, the outputs might mix two versions of it.
    let after = Fingerprint::compute(spec, kernel_present)?;
    if after.digest != fingerprint.digest {
        return Err(Error::InputsChanged {
            what: after.changed_inputs(&fingerprint.inputs).join(", "),
        });
    }

    // Everything is checked and staged. From the first rename on, the old record no longer
    // describes build_dir; until then a failure leaves the previous compile complete and valid.
    remove_if_present(&build_dir.join(STATE_FILE))?;
    let mut outputs = BTreeMap::new();
    commit(initramfs_temp, &build_dir.join(INITRAMFS_OUTPUT))?;
    outputs.insert(INITRAMFS_OUTPUT.to_string(), initramfs_record);
    commit(rootfs_temp, &build_dir.join(ROOTFS_OUTPUT))?;
    outputs.insert(ROOTFS_OUTPUT.to_string(), rootfs_record);
    if let Some((temp, record)) = kernel_stage {
        commit(temp, &build_dir.join(KERNEL_OUTPUT))?;
        outputs.insert(KERNEL_OUTPUT.to_string(), record);
    } else if build_dir.join(KERNEL_OUTPUT).exists() {
        info!(
            "{} is left from an earlier compile; this compile has no kernel and deploy will not use it",
            build_dir.join(KERNEL_OUTPUT).display()
        );
    }
    sync_dir(build_dir)?;

    let state = State {
        format: STATE_FORMAT,
        tool: tool_identity().to_string(),
        digest: fingerprint.digest.clone(),
        spec_sha256: fingerprint.spec_sha256.clone(),
        inputs: fingerprint.inputs.iter().cloned().collect(),
        outputs: outputs.clone(),
    };
    state.write(build_dir)?;
    progress(100);
    Ok(CompileReport {
        reused: false,
        reason,
        digest: fingerprint.digest,
        outputs,
        initramfs: Some(summary),
        inject: Some(report),
    })
}

/// The first 12 hex digits of a digest, for log lines.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// Checks the inputs exist, with the seed's hints when they do not; returns whether there is a
/// kernel (a missing one only warns unless `kernel_required`).
fn locate_inputs(spec: &Spec) -> Result<bool, Error> {
    require_input(
        &spec.initramfs,
        "Initramfs",
        spec.build_hint("tiny-initramfs-image"),
    )?;
    require_input(
        &spec.rootfs,
        "Rootfs image",
        spec.build_hint("rootfs-image"),
    )?;
    for injection in &spec.inject {
        require_input(
            &injection.source,
            "Inject source",
            format!(
                "Fix \"inject\" in {} (it is to become {} in the image).",
                spec.path.display(),
                injection.dest
            ),
        )?;
    }
    let kernel_hint = format!(
        "Build it first with: bitbake mc:{}:virtual/kernel",
        spec.multiconfig
    );
    match require_input(&spec.kernel, "Kernel", kernel_hint) {
        Ok(()) => Ok(true),
        Err(Error::MissingInput { path, .. }) if !spec.kernel_required => {
            warn!(
                "Kernel not found at {}; compiling without a kernel (set \"kernel_required\": true to make this an error)",
                path.display()
            );
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// An input must exist (symlinks followed: image deploy dirs are full of them) and be a file.
fn require_input(path: &Path, what: &'static str, hint: String) -> Result<(), Error> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(Error::NotAFile {
            what,
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::MissingInput {
            what,
            path: path.to_path_buf(),
            hint,
        }),
        Err(e) => Err(Error::io("inspect", path)(e)),
    }
}

/// A directory named by the spec must exist: BitBake creates it (`[dirs]`), and creating a
/// mistyped path silently would hide the mistake.
pub(crate) fn require_dir(path: &Path, field: &'static str) -> Result<(), Error> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::Directory {
            field,
            path: path.to_path_buf(),
            problem: "is not a directory".into(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(Error::Directory {
            field,
            path: path.to_path_buf(),
            problem: "does not exist; create it first (BitBake does so through the task's [dirs])"
                .into(),
        }),
        Err(e) => Err(Error::io("inspect", path)(e)),
    }
}

/// What the outputs depend on, hashed: the digest that decides reuse.
///
/// digest = sha256 of a version tag, the tool, sha256 of the spec's canonical bytes, and for each
/// input its label and the sha256 of its bytes (or "absent" for a missing optional kernel), all
/// length-prefixed. Hashing each input separately lets them be read in parallel and lets a
/// rebuild say which one changed.
pub(crate) struct Fingerprint {
    pub digest: String,
    pub spec_sha256: String,
    /// (label, sha256) in a fixed order.
    pub inputs: Vec<(String, String)>,
}

impl Fingerprint {
    fn compute(spec: &Spec, kernel_present: bool) -> Result<Fingerprint, Error> {
        let mut files: Vec<(String, &Path)> = vec![
            ("initramfs".into(), spec.initramfs.as_path()),
            ("rootfs".into(), spec.rootfs.as_path()),
        ];
        if kernel_present {
            files.push(("kernel".into(), spec.kernel.as_path()));
        }
        for (i, injection) in spec.inject.iter().enumerate() {
            files.push((format!("inject[{i}]"), injection.source.as_path()));
        }
        let mut inputs = files
            .par_iter()
            .map(|(label, path)| {
                let file = File::open(path).map_err(Error::io("open", path))?;
                let (sha, _) = sha256_reader(file).map_err(Error::io("read", path))?;
                Ok((label.clone(), sha))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        if !kernel_present {
            inputs.insert(2, ("kernel".into(), "absent".into()));
        }
        let spec_sha256 = hex(&Sha256::digest(spec.canonical_bytes()));
        let mut hasher = Sha256::new();
        let mut put = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(bytes);
        };
        put(b"vxn-blobs compile digest 1");
        put(tool_identity().as_bytes());
        put(spec_sha256.as_bytes());
        for (label, sha) in &inputs {
            put(label.as_bytes());
            put(sha.as_bytes());
        }
        Ok(Fingerprint {
            digest: hex(&hasher.finalize()),
            spec_sha256,
            inputs,
        })
    }

    /// Labels whose hash differs from `before` (or that appeared or went away).
    fn changed_inputs(&self, before: &[(String, String)]) -> Vec<String> {
        let old: BTreeMap<&str, &str> = before
            .iter()
            .map(|(l, s)| (l.as_str(), s.as_str()))
            .collect();
        let new: BTreeMap<&str, &str> = self
            .inputs
            .iter()
            .map(|(l, s)| (l.as_str(), s.as_str()))
            .collect();
        let mut labels: Vec<&str> = old.keys().chain(new.keys()).copied().collect();
        labels.sort_unstable();
        labels.dedup();
        labels
            .into_iter()
            .filter(|l| old.get(l) != new.get(l))
            .map(|l| format!("input {l}"))
            .collect()
    }

    /// Why the previous compile's record does not fit, in words.
    fn describe_change(&self, previous: &State) -> String {
        let mut what = Vec::new();
        if previous.tool != tool_identity() {
            what.push(format!(
                "the tool changed ({} -> {})",
                previous.tool,
                tool_identity()
            ));
        }
        if previous.spec_sha256 != self.spec_sha256 {
            what.push("the spec changed".to_string());
        }
        let before: Vec<(String, String)> = previous
            .inputs
            .iter()
            .map(|(l, s)| (l.clone(), s.clone()))
            .collect();
        what.extend(self.changed_inputs(&before));
        if what.is_empty() {
            what.push("the recorded digest differs".to_string());
        }
        format!("{} since the last compile", what.join(", "))
    }
}

impl State {
    /// Reads the state of `build_dir`; the error is the reason there is no usable record.
    pub fn read(build_dir: &Path) -> Result<State, String> {
        let path = build_dir.join(STATE_FILE);
        let file = match open_no_follow(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(format!("nothing was compiled there yet: no {STATE_FILE}"))
            }
            Err(e) => return Err(format!("{STATE_FILE} cannot be opened: {e}")),
        };
        let mut text = Vec::new();
        if let Err(e) = file.take(MAX_STATE_BYTES).read_to_end(&mut text) {
            return Err(format!("{STATE_FILE} cannot be read: {e}"));
        }
        let state: State = serde_json::from_slice(&text)
            .map_err(|e| format!("{STATE_FILE} is not a valid record ({e})"))?;
        if state.format != STATE_FORMAT {
            return Err(format!(
                "{STATE_FILE} has format {}, not {STATE_FORMAT}",
                state.format
            ));
        }
        for required in [INITRAMFS_OUTPUT, ROOTFS_OUTPUT] {
            if !state.outputs.contains_key(required) {
                return Err(format!("{STATE_FILE} records no {required}"));
            }
        }
        if let Some(name) = state
            .outputs
            .keys()
            .find(|n| ![INITRAMFS_OUTPUT, ROOTFS_OUTPUT, KERNEL_OUTPUT].contains(&n.as_str()))
        {
            return Err(format!("{STATE_FILE} records an unknown output {name:?}"));
        }
        Ok(state)
    }

    /// Hashes every recorded output; the error says which one no longer matches.
    ///
    /// Why hash instead of comparing size and mtime: an mtime can be carried over by `cp -p`,
    /// sstate or a restore while the content differs, and a same-size rewrite would pass. Hashing
    /// reads ~300 MB for a typical rootfs.img, about a second (in parallel with the inputs), which
    /// is still far below the minutes of an xz rebuild, and it is the only check that supports
    /// the promise that reused outputs are exactly what a rebuild gives.
    pub(crate) fn verify_outputs(&self, build_dir: &Path) -> Result<(), String> {
        self.outputs
            .par_iter()
            .map(|(name, record)| {
                let path = build_dir.join(name);
                let (sha, size) = hash_output(&path).map_err(|e| format!("{name}: {e}"))?;
                if sha != record.sha256 || size != record.size {
                    return Err(format!(
                        "{} no longer matches the sha256 recorded by the last compile",
                        path.display()
                    ));
                }
                Ok(())
            })
            .collect()
    }

    fn write(&self, build_dir: &Path) -> Result<(), Error> {
        let mut text = serde_json::to_vec_pretty(self).map_err(|e| Error::Io {
            action: "serialize the state for",
            path: build_dir.join(STATE_FILE),
            source: e.into(),
        })?;
        text.push(b'\n');
        let temp = stage_bytes(build_dir, &text)?;
        commit(temp, &build_dir.join(STATE_FILE))?;
        sync_dir(build_dir)
    }
}

/// Opens an output for hashing: must be a regular file, not a symlink to one.
fn hash_output(path: &Path) -> io::Result<(String, u64)> {
    let file = open_no_follow(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    sha256_reader(file)
}

/// Opens `path` for reading without following a symlink at its last component.
pub(crate) fn open_no_follow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Streams `reader` through SHA-256; returns the hex digest and the byte count.
pub(crate) fn sha256_reader(mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                size += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((hex(&hasher.finalize()), size))
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A held `flock`; released when dropped (or when the process dies, so no stale lock remains).
pub(crate) struct DirLock {
    _file: File,
}

/// Takes the exclusive lock of `build_dir`, waiting (and saying so) while another run holds it.
///
/// The lock file is opened with `O_NOFOLLOW` so a symlink planted there cannot make the tool
/// create or truncate a file elsewhere; it is never removed (removing lock files races).
pub(crate) fn lock_dir(build_dir: &Path) -> Result<DirLock, Error> {
    let path = build_dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| match unwritable("build_dir", build_dir, &e) {
            Some(error) => error,
            None => refuse_symlink(&path, e, "open the lock file"),
        })?;
    flock_exclusive(&file, &path)?;
    Ok(DirLock { _file: file })
}

/// A permission error while creating something in a directory the spec names, reworded to say
/// which directory must be writable; `None` for other errors.
pub(crate) fn unwritable(field: &'static str, dir: &Path, e: &io::Error) -> Option<Error> {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => Some(Error::Directory {
            field,
            path: dir.to_path_buf(),
            problem: format!("is not writable ({e}); vxn-blobs creates its files there"),
        }),
        _ => None,
    }
}

/// Locks an already opened file or directory exclusively, logging when it has to wait.
pub(crate) fn flock_exclusive(file: &File, path: &Path) -> Result<(), Error> {
    let fd = file.as_raw_fd();
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(Error::io("lock", path)(err));
    }
    info!(
        "waiting for another vxn-blobs run to release {}",
        path.display()
    );
    loop {
        // SAFETY: as above.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
            debug!("got {}", path.display());
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(Error::io("lock", path)(err));
        }
    }
}

/// Maps ELOOP (a symlink where `O_NOFOLLOW` was asked) to a refusal that says so.
pub(crate) fn refuse_symlink(path: &Path, e: io::Error, action: &'static str) -> Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        Error::Unsafe {
            path: path.to_path_buf(),
            why: "it is a symlink, and vxn-blobs does not follow symlinks at the paths it writes; remove it".into(),
        }
    } else {
        Error::io(action, path)(e)
    }
}

/// Removes temporary files of earlier runs that were killed. Called with the lock held, so no
/// live run owns them; only names with [`TEMP_PREFIX`] (or the engine's "." in front of one)
/// are touched, never a directory.
pub(crate) fn remove_stale_temps(dir: &Path) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            debug!("cannot list {} for stale temporaries: {e}", dir.display());
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // The engine stages its output as ".<output name>.XXXX.partial" beside the output,
        // which compile names with TEMP_PREFIX: that file is ours too.
        let is_temp = name.starts_with(TEMP_PREFIX)
            || name
                .strip_prefix('.')
                .is_some_and(|n| n.starts_with(TEMP_PREFIX));
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(true);
        if is_temp && !is_dir {
            match fs::remove_file(entry.path()) {
                Ok(()) => info!(
                    "removed {}, left by an interrupted run",
                    entry.path().display()
                ),
                Err(e) => warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}

/// Removes a file of ours if it exists (unlink never follows a symlink).
fn remove_if_present(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path)(e)),
    }
}

/// A new temporary file in `dir` with the output mode. tempfile opens it with
/// `O_CREAT | O_EXCL`, which fails rather than follow a symlink planted at the name.
pub(crate) fn new_temp(dir: &Path) -> Result<tempfile::NamedTempFile, Error> {
    let temp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(Error::io("create a temporary file in", dir))?;
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(OUTPUT_MODE))
        .map_err(Error::io("set the mode of", temp.path()))?;
    Ok(temp)
}

/// Writes `bytes` to a synced temporary file in `dir`, ready for [`commit`].
pub(crate) fn stage_bytes(dir: &Path, bytes: &[u8]) -> Result<TempPath, Error> {
    let mut temp = new_temp(dir)?;
    temp.write_all(bytes)
        .map_err(Error::io("write", temp.path()))?;
    temp.as_file()
        .sync_all()
        .map_err(Error::io("sync", temp.path()))?;
    Ok(temp.into_temp_path())
}

/// Renames a staged file into place; rename replaces a symlink there instead of following it.
pub(crate) fn commit(temp: TempPath, destination: &Path) -> Result<(), Error> {
    // rename(2) onto another name of the same file does nothing and leaves both names: a
    // redeploy that hardlinked the unchanged output would keep its staging name forever.
    if same_file(&temp, destination) {
        let staged = temp.to_path_buf();
        return temp.close().map_err(Error::io("remove", &staged));
    }
    temp.persist(destination).map_err(|e| Error::Io {
        action: "rename into place",
        path: destination.to_path_buf(),
        source: e.error,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Makes renames in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync", dir))
}

/// A reader that copies what passes through it into `out` and hashes it, so one pass both checks
/// and copies (the checked bytes are the copied bytes). Write errors are kept apart from read
/// errors so they can be reported against the right file.
struct Tee<'a, R> {
    inner: R,
    out: &'a mut File,
    hasher: Sha256,
    size: u64,
    write_error: Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            if let Err(e) = self.out.write_all(&buf[..n]) {
                self.write_error = Some(e);
                return Err(io::Error::other("writing the copy failed"));
            }
            self.hasher.update(&buf[..n]);
            self.size += n as u64;
        }
        Ok(n)
    }
}

/// Copies `input` into a new staged file in `dir`, handing the bytes to `consume` on the way;
/// `consume` must read to the end. A failed write is reported against the staged file, whatever
/// `consume` made of the interrupted stream.
fn stage_copy<T>(
    input: &Path,
    dir: &Path,
    consume: impl FnOnce(&mut dyn Read) -> Result<T, Error>,
) -> Result<(tempfile::NamedTempFile, OutputRecord, T), Error> {
    let source = File::open(input).map_err(Error::io("open", input))?;
    let mut temp = new_temp(dir)?;
    let temp_path = temp.path().to_path_buf();
    let mut tee = Tee {
        inner: source,
        out: temp.as_file_mut(),
        hasher: Sha256::new(),
        size: 0,
        write_error: None,
    };
    let consumed = consume(&mut tee);
    if let Some(e) = tee.write_error.take() {
        return Err(Error::io("write", &temp_path)(e));
    }
    let value = consumed?;
    let record = OutputRecord {
        sha256: hex(&tee.hasher.finalize()),
        size: tee.size,
    };
    temp.as_file()
        .sync_all()
        .map_err(Error::io("sync", &temp_path))?;
    Ok((temp, record, value))
}

/// Copies the initramfs into a staged file while checking it.
fn stage_initramfs(spec: &Spec) -> Result<(TempPath, OutputRecord, initramfs::Summary), Error> {
    let (temp, record, summary) = stage_copy(&spec.initramfs, &spec.build_dir, |bytes| {
        Ok(initramfs::check(bytes, &spec.initramfs)?)
    })?;
    Ok((temp.into_temp_path(), record, summary))
}

/// Copies the kernel into a staged file, then checks the magic of the copy.
fn stage_kernel(spec: &Spec) -> Result<(TempPath, OutputRecord), Error> {
    let (temp, record, ()) = stage_copy(&spec.kernel, &spec.build_dir, |bytes| {
        io::copy(bytes, &mut io::sink())
            .map(drop)
            .map_err(Error::io("read", &spec.kernel))
    })?;
    let copy = temp.reopen().map_err(Error::io("read", temp.path()))?;
    kernel::check_reader(copy, &spec.kernel, spec.kernel_arch, &spec.target_arch)?;
    Ok((temp.into_temp_path(), record))
}

/// Runs the engine into a staged path and hashes what it wrote.
fn stage_rootfs(
    spec: &Spec,
    progress: &mut dyn FnMut(u8),
) -> Result<(TempPath, OutputRecord, InjectReport), Error> {
    // The engine writes atomically onto this path; the temp path owns the name, so a failure
    // anywhere later removes whatever is there.
    let temp = new_temp(&spec.build_dir)?.into_temp_path();
    let options = InjectOptions {
        compression: spec.compression,
        jobs: spec.jobs,
        source_date_epoch: spec.source_date_epoch,
    };
    // The engine reports the data region; 100 is kept for the very end of compile.
    let mut last = 0u8;
    let mut on_progress = |done: u64, total: u64| {
        if total > 0 {
            let pct = (u128::from(done.min(total)) * 99 / u128::from(total)) as u8;
            if pct > last {
                last = pct;
                progress(pct);
            }
        }
    };
    let report = squashfs::inject(
        &spec.rootfs,
        &temp,
        &spec.inject,
        &options,
        &mut on_progress,
    )?;
    let file = open_no_follow(&temp).map_err(Error::io("open", &temp))?;
    file.set_permissions(fs::Permissions::from_mode(OUTPUT_MODE))
        .map_err(Error::io("set the mode of", &temp))?;
    let (sha256, size) = sha256_reader(&file).map_err(Error::io("read", &temp))?;
    file.sync_all().map_err(Error::io("sync", &temp))?;
    Ok((temp, OutputRecord { sha256, size }, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_sha256_match_known_values() {
        let (sha, size) = sha256_reader(&b"abc"[..]).unwrap();
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(size, 3);
    }

    #[test]
    fn state_rejects_outputs_outside_the_known_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State {
            format: STATE_FORMAT,
            tool: tool_identity().into(),
            digest: "d".into(),
            spec_sha256: "s".into(),
            inputs: BTreeMap::new(),
            outputs: BTreeMap::new(),
        };
        let record = OutputRecord {
            sha256: "x".into(),
            size: 0,
        };
        for name in [INITRAMFS_OUTPUT, ROOTFS_OUTPUT, "../../etc/passwd"] {
            state.outputs.insert(name.into(), record.clone());
        }
        state.write(dir.path()).unwrap();
        let reason = State::read(dir.path()).unwrap_err();
        assert!(reason.contains("unknown output"), "{reason}");
    }

    #[test]
    fn a_symlinked_state_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join(STATE_FILE)).unwrap();
        let reason = State::read(dir.path()).unwrap_err();
        assert!(reason.contains("cannot be opened"), "{reason}");
    }

    #[test]
    fn the_lock_refuses_a_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, dir.path().join(LOCK_FILE)).unwrap();
        let err = lock_dir(dir.path()).err().unwrap();
        assert!(matches!(err, Error::Unsafe { .. }), "{err}");
        assert!(!target.exists());
    }

    #[test]
    fn stale_temporaries_go_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}abc")), b"x").unwrap();
        fs::write(
            dir.path().join(format!(".{TEMP_PREFIX}abc.x.partial")),
            b"x",
        )
        .unwrap();
        fs::write(dir.path().join("user-file"), b"x").unwrap();
        fs::write(dir.path().join(".rootfs.img.abc.partial"), b"x").unwrap();
        fs::create_dir(dir.path().join(format!("{TEMP_PREFIX}dir"))).unwrap();
        remove_stale_temps(dir.path());
        assert!(!dir.path().join(format!("{TEMP_PREFIX}abc")).exists());
        assert!(!dir
            .path()
            .join(format!(".{TEMP_PREFIX}abc.x.partial"))
            .exists());
        assert!(dir.path().join("user-file").exists());
        assert!(dir.path().join(".rootfs.img.abc.partial").exists());
        assert!(dir.path().join(format!("{TEMP_PREFIX}dir")).exists());
    }
}
