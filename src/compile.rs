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
//! are known not to have changed meanwhile; the record that makes the outputs count as a
//! completed compile is written last. An exclusive lock on `build_dir` serializes concurrent
//! compiles and deploys. Nothing is followed through a symlink planted at an output path: temp
//! files are created with `O_EXCL` (which refuses symlinks) and renamed over whatever is there.
//!
//! The file helpers (lock, staging, hashing) are in `safe_fs`, shared with `deploy`; the names
//! of the outputs and the record that makes them a completed compile are the blob set's
//! ([`crate::blob_set`]), which deploy reads.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use log::{info, warn};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tempfile::TempPath;

use crate::blob_set::{self, OutputRecord, Record, INITRAMFS, KERNEL, ROOTFS};
use crate::error::Error;
use crate::identity::tool_identity;
use crate::initramfs;
use crate::kernel;
use crate::safe_fs::{
    self, commit, ensure_dir, hex, lock_dir, new_temp, open_no_follow, remove_if_present,
    remove_stale_temps, sha256_reader, stage_copy, sync_dir, OUTPUT_MODE,
};
use crate::spec::Spec;
use crate::squashfs::{self, InjectOptions, InjectReport};

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
pub fn run(spec: &Spec, progress: &mut dyn FnMut(u8)) -> Result<CompileReport, Error> {
    let build_dir = &spec.build_dir;
    ensure_dir(build_dir, "build_dir")?;
    let _lock = lock_dir(build_dir)?;
    remove_stale_temps(build_dir);

    let kernel_present = locate_inputs(spec)?;
    let previous = Record::read(build_dir).map_err(|e| e.to_string());
    let (fingerprint, outputs_ok) = rayon::join(
        || Fingerprint::compute(spec, kernel_present),
        || match &previous {
            Ok(record) => record.verify_outputs(build_dir).map_err(|e| e.to_string()),
            Err(reason) => Err(reason.clone()),
        },
    );
    let fingerprint = fingerprint?;
    let reason = match (&previous, outputs_ok) {
        (Ok(record), Ok(())) if record.digest == fingerprint.digest => {
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
                outputs: record.outputs.clone(),
                initramfs: None,
                inject: None,
            });
        }
        (Ok(record), Ok(())) => fingerprint.describe_change(record),
        (Ok(record), Err(why)) if record.digest == fingerprint.digest => why,
        (Ok(record), Err(_)) => fingerprint.describe_change(record),
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
    let (rootfs_temp, rootfs_record, reuse_record, report) = stage_rootfs(spec, progress)?;
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

    // The record must describe the bytes that were read: if an input changed while it was being
    // copied or injected, the outputs might mix two versions of it.
    let after = Fingerprint::compute(spec, kernel_present)?;
    if after.digest != fingerprint.digest {
        return Err(Error::InputsChanged {
            what: after.changed_inputs(&fingerprint.inputs).join(", "),
        });
    }

    // Everything is checked and staged. From the first rename on, the old record no longer
    // describes build_dir; until then a failure leaves the previous compile complete and valid.
    remove_if_present(&build_dir.join(blob_set::RECORD))?;
    let mut outputs = BTreeMap::new();
    commit(initramfs_temp, &build_dir.join(INITRAMFS))?;
    outputs.insert(INITRAMFS.to_string(), initramfs_record);
    commit(rootfs_temp, &build_dir.join(ROOTFS))?;
    outputs.insert(ROOTFS.to_string(), rootfs_record);
    // The reuse record names the sha256 of the rootfs.img it describes, so a kill between these
    // two renames leaves a pair that the next compile sees does not fit (and does not reuse).
    let reuse_path = squashfs::record_path(&build_dir.join(ROOTFS));
    match reuse_record {
        Some(temp) => commit(temp, &reuse_path)?,
        None => remove_if_present(&reuse_path)?,
    }
    if let Some((temp, record)) = kernel_stage {
        commit(temp, &build_dir.join(KERNEL))?;
        outputs.insert(KERNEL.to_string(), record);
    } else if build_dir.join(KERNEL).exists() {
        info!(
            "{} is left from an earlier compile; this compile has no kernel and deploy will not use it",
            build_dir.join(KERNEL).display()
        );
    }
    sync_dir(build_dir)?;

    let record = Record::new(
        tool_identity().to_string(),
        fingerprint.digest.clone(),
        fingerprint.spec_sha256.clone(),
        fingerprint.inputs.iter().cloned().collect(),
        outputs.clone(),
    );
    record.write(build_dir)?;
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
        Err(e) => Err(safe_fs::Error::io("inspect", path)(e).into()),
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
                let file = File::open(path).map_err(safe_fs::Error::io("open", path))?;
                let (sha, _) = sha256_reader(file).map_err(safe_fs::Error::io("read", path))?;
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
    fn describe_change(&self, previous: &Record) -> String {
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

/// Copies the initramfs into a staged file while checking it.
fn stage_initramfs(spec: &Spec) -> Result<(TempPath, OutputRecord, initramfs::Summary), Error> {
    let (temp, (sha256, size), summary) = stage_copy(&spec.initramfs, &spec.build_dir, |bytes| {
        Ok::<_, Error>(initramfs::check(bytes, &spec.initramfs)?)
    })?;
    Ok((
        temp.into_temp_path(),
        OutputRecord { sha256, size },
        summary,
    ))
}

/// Copies the kernel into a staged file, then checks the magic of the copy.
fn stage_kernel(spec: &Spec) -> Result<(TempPath, OutputRecord), Error> {
    let (temp, (sha256, size), ()) = stage_copy(&spec.kernel, &spec.build_dir, |bytes| {
        io::copy(bytes, &mut io::sink())
            .map(drop)
            .map_err(safe_fs::Error::io("read", &spec.kernel))
    })?;
    let copy = temp
        .reopen()
        .map_err(safe_fs::Error::io("read", temp.path()))?;
    kernel::check_reader(copy, &spec.kernel, spec.kernel_arch, &spec.target_arch)?;
    Ok((temp.into_temp_path(), OutputRecord { sha256, size }))
}

/// Runs the engine into a staged path and hashes what it wrote. The engine reuses the blocks
/// of the previous rootfs.img where its record allows, and leaves the record of this one beside
/// the staged path (when the data was transcoded), also returned as a staged file.
fn stage_rootfs(
    spec: &Spec,
    progress: &mut dyn FnMut(u8),
) -> Result<(TempPath, OutputRecord, Option<TempPath>, InjectReport), Error> {
    // The engine writes atomically onto this path; the temp path owns the name, so a failure
    // anywhere later removes whatever is there.
    let temp = new_temp(&spec.build_dir)?.into_temp_path();
    let options = InjectOptions {
        compression: spec.compression,
        jobs: spec.jobs,
        source_date_epoch: spec.source_date_epoch,
        reuse: Some(spec.build_dir.join(ROOTFS)),
        block_cache: spec.block_cache.clone(),
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
    let reuse_record = match &report.record {
        Some(path) => {
            Some(TempPath::try_from_path(path).map_err(safe_fs::Error::io("take over", path))?)
        }
        None => None,
    };
    let file = open_no_follow(&temp).map_err(safe_fs::Error::io("open", &temp))?;
    file.set_permissions(fs::Permissions::from_mode(OUTPUT_MODE))
        .map_err(safe_fs::Error::io("set the mode of", &temp))?;
    let (sha256, size) = match &report.output_sha256 {
        Some(hashed) => hashed.clone(),
        None => sha256_reader(&file).map_err(safe_fs::Error::io("read", &temp))?,
    };
    file.sync_all().map_err(safe_fs::Error::io("sync", &temp))?;
    Ok((temp, OutputRecord { sha256, size }, reuse_record, report))
}
