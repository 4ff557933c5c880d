//! `deploy`: the seed's do_deploy, installing a completed compile under
//! `deploy_dir/vxn/<blob_arch>/` with a README and a SHA256SUMS file; and `install`, which puts
//! the same blobs with a SHA256SUMS under `<destdir><install_dir>` (a recipe's `${D}`, for the
//! Dom0 package) with the same checks and atomicity.
//!
//! Deploy refuses to run on anything but a completed compile of the same spec: the record
//! must exist, name the same tool and spec, and every output must still hash to what compile
//! recorded. Each file is staged under a temporary name in the target directory (a hardlink to
//! the build output where the filesystem allows, else a synced copy), verified, given mode 0644
//! and renamed into place only once all of them, the README and SHA256SUMS are staged; so a
//! failure leaves the previous deploy's files as they were, and no final name ever holds a
//! partial file. Hardlinks are safe because compile never rewrites an output in place: it
//! renames a new file over the name, leaving the deployed inode untouched.
//!
//! Before the first rename, the staged set goes through the boot check ([`crate::check`]) as the
//! directory it is about to become; the spec's `check` makes its findings warnings or a refusal,
//! so with `"error"` a set that would not boot never replaces one that would.
//!
//! Stale files: a deploy of the same arch may have installed files this one does not (the
//! kernel of a compile that had one, or an older `kernel_name`). Deploy removes exactly the
//! names that the previous SHA256SUMS in that directory lists and this deploy does not install,
//! and only plain files or symlinks with plain names; anything else in the directory is the
//! user's and is left alone. The SHA256SUMS file is thus the manifest of what deploy owns there.
//!
//! `install` copies instead of hardlinking: `${D}` is under pseudo, which must see files it
//! created, and the package must not share inodes with the build directory.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{debug, info, warn};
use sha2::{Digest, Sha256};
use tempfile::TempPath;

use crate::blob_set::{
    parse_sums_line, sums_text, BlobSet, OutputRecord, Record, INITRAMFS, KERNEL, README, ROOTFS,
    SUMS,
};
use crate::check;
use crate::error::Error;
use crate::identity::tool_identity;
use crate::safe_fs::{
    self, commit, ensure_dir, hex, lock_dir, new_temp, open_no_follow, refuse_symlink,
    remove_stale_temps, sha256_reader, stage_bytes, sync_dir, unwritable, OUTPUT_MODE,
};
use crate::spec::{CheckMode, Spec};

/// One installed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployedFile {
    pub name: String,
    pub sha256: String,
    pub size: u64,
    /// True when it is a hardlink to the build output, false when it is a copy.
    pub linked: bool,
}

/// What a deploy or install did.
#[derive(Debug, Clone)]
pub struct DeployReport {
    /// Where the files went: `deploy_dir/vxn/<blob_arch>` or `<destdir><install_dir>`.
    pub dir: PathBuf,
    /// Every file installed, SHA256SUMS last.
    pub files: Vec<DeployedFile>,
    /// Names of an earlier deploy that this one removed.
    pub removed: Vec<String>,
    /// The boot check of what was installed; `None` when the spec turns it off.
    pub check: Option<check::Report>,
}

/// Where a completed compile goes and in what form: all that tells `deploy` and `install` apart.
struct Placement<'a> {
    /// The directory that is created like `mkdir -p` when missing (`deploy_dir`, `--destdir`),
    /// and the spec key or option that names it, for messages.
    base: &'a Path,
    base_field: &'static str,
    /// Directories below `base`, created when missing, each of which must be a real directory
    /// so that nothing is written outside `base` through a symlink.
    below: Vec<&'a std::ffi::OsStr>,
    /// Write the README (deploy) or not (install: the package holds just the blobs).
    readme: bool,
    /// Hardlink build outputs where possible (deploy) or always copy (install).
    link: bool,
}

/// Runs deploy for `spec`.
pub fn deploy(spec: &Spec) -> Result<DeployReport, Error> {
    place(
        spec,
        Placement {
            base: &spec.deploy_dir,
            base_field: "deploy_dir",
            below: vec!["vxn".as_ref(), spec.blob_arch.as_ref()],
            readme: true,
            link: true,
        },
    )
}

/// Runs install for `spec`: the blobs and SHA256SUMS into `destdir` + the spec's `install_dir`.
pub fn install(spec: &Spec, destdir: &Path) -> Result<DeployReport, Error> {
    place(
        spec,
        Placement {
            base: destdir,
            base_field: "destdir",
            below: spec
                .install_dir
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(name) => Some(name),
                    _ => None,
                })
                .collect(),
            readme: false,
            link: false,
        },
    )
}

fn place(spec: &Spec, placement: Placement) -> Result<DeployReport, Error> {
    let build_dir = &spec.build_dir;
    let not_compiled = |reason| not_compiled(spec, reason);
    match fs::metadata(build_dir) {
        Ok(meta) if meta.is_dir() => {}
        _ => return Err(not_compiled("that directory does not exist".into())),
    }
    let _build_lock = lock_dir(build_dir)?;
    let record = Record::read(build_dir).map_err(|e| not_compiled(e.to_string()))?;
    if record.tool != tool_identity() {
        return Err(not_compiled(format!(
            "it was made by {}, this is {}",
            record.tool,
            tool_identity()
        )));
    }
    if record.spec_sha256 != hex(&Sha256::digest(spec.canonical_bytes())) {
        return Err(not_compiled(
            "the spec (or SOURCE_DATE_EPOCH) changed since that compile".into(),
        ));
    }

    ensure_dir(placement.base, placement.base_field)?;
    // A failed run leaves no directory it created behind (rmdir only removes empty ones).
    let mut created = Vec::new();
    let mut dir = placement.base.to_path_buf();
    let result = (|| {
        for name in &placement.below {
            dir.push(name);
            if ensure_real_dir(&dir, placement.base_field)? {
                created.push(dir.clone());
            }
        }
        install_files(spec, &record, &dir, &placement)
    })();
    if result.is_err() {
        for dir in created.iter().rev() {
            remove_dir_if_empty(dir);
        }
    }
    result
}

/// The refusal to deploy anything but a completed compile of this spec.
fn not_compiled(spec: &Spec, reason: String) -> Error {
    Error::NotCompiled {
        build_dir: spec.build_dir.clone(),
        spec: spec.path.clone(),
        reason,
    }
}

/// A failed deploy leaves no directory it created behind (rmdir only removes empty ones).
fn remove_dir_if_empty(dir: &Path) {
    if let Err(e) = fs::remove_dir(dir) {
        debug!("leaving {}: {e}", dir.display());
    }
}

/// Installs the outputs `record` lists into `dir`, with a README when the placement asks for
/// one, and SHA256SUMS.
fn install_files(
    spec: &Spec,
    record: &Record,
    dir: &Path,
    placement: &Placement,
) -> Result<DeployReport, Error> {
    let build_dir = &spec.build_dir;
    let not_compiled = |reason| not_compiled(spec, reason);
    // Serializes deploys from different build dirs into the same directory; the directory
    // itself is locked so that no lock file ends up among the deployed files.
    let dir_handle = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(|e| refuse_symlink(dir, e, "open"))?;
    safe_fs::flock_exclusive(&dir_handle, dir)?;
    remove_stale_temps(dir);
    let previous_manifest = read_manifest(&dir.join(SUMS));

    // Stage and verify everything before the first rename.
    let mut plan = vec![
        (INITRAMFS, INITRAMFS.to_string()),
        (ROOTFS, ROOTFS.to_string()),
    ];
    if record.outputs.contains_key(KERNEL) {
        plan.insert(0, (KERNEL, spec.kernel_name.clone()));
    }
    let mut staged: Vec<(TempPath, DeployedFile)> = Vec::new();
    for (output, name) in &plan {
        let output_record = &record.outputs[*output];
        let (temp, linked) =
            stage_output(&build_dir.join(output), dir, output_record, placement.link).map_err(
                |e| match e {
                    StageError::Mismatch(reason) => not_compiled(reason),
                    StageError::Other(e) => e,
                },
            )?;
        staged.push((
            temp,
            DeployedFile {
                name: name.clone(),
                sha256: output_record.sha256.clone(),
                size: output_record.size,
                linked,
            },
        ));
    }
    let kernel_name = record
        .outputs
        .contains_key(KERNEL)
        .then_some(spec.kernel_name.as_str());
    if placement.readme {
        let readme = readme_text(spec, kernel_name);
        staged.push(stage_text(dir, README, &readme)?);
    }
    let sums = sums_text(
        staged
            .iter()
            .map(|(_, f)| (f.name.as_str(), f.sha256.as_str())),
    );
    staged.push(stage_text(dir, SUMS, &sums)?);
    let check = check_staged(spec, dir, &staged)?;

    let mut files = Vec::new();
    for (temp, file) in staged {
        commit(temp, &dir.join(&file.name))?;
        info!(
            "installed {} ({})",
            dir.join(&file.name).display(),
            if file.linked {
                "hardlink to the build output"
            } else {
                "written"
            }
        );
        files.push(file);
    }
    sync_dir(dir)?;

    let installed: BTreeSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
    let mut removed = Vec::new();
    for name in previous_manifest {
        if installed.contains(name.as_str()) {
            continue;
        }
        let path = dir.join(&name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if !meta.is_dir() => match fs::remove_file(&path) {
                Ok(()) => {
                    info!(
                        "removed {}: an earlier deploy installed it, this one does not",
                        path.display()
                    );
                    removed.push(name);
                }
                Err(e) => warn!("cannot remove stale {}: {e}", path.display()),
            },
            _ => {}
        }
    }
    if !removed.is_empty() {
        sync_dir(dir)?;
    }
    Ok(DeployReport {
        dir: dir.to_path_buf(),
        files,
        removed,
        check,
    })
}

/// Runs the boot check on the staged files as the set they are about to become in `dir`, so
/// that with `"check": "error"` a set that would not boot replaces nothing.
fn check_staged(
    spec: &Spec,
    dir: &Path,
    staged: &[(TempPath, DeployedFile)],
) -> Result<Option<check::Report>, Error> {
    if spec.check == CheckMode::Off {
        return Ok(None);
    }
    let files = staged
        .iter()
        .map(|(temp, file)| (file.name.clone(), temp.to_path_buf()))
        .collect();
    let options = check::Options {
        arch: Some(spec.target_arch.clone()),
        inits: Vec::new(),
    };
    let report = check::check(&BlobSet::staged(dir, files), &options);
    if report.ok {
        info!(
            "check: {} holds nothing that would stop the boot",
            dir.display()
        );
    } else if spec.check == CheckMode::Error {
        return Err(Error::CheckFailed {
            dir: dir.to_path_buf(),
            spec: spec.path.clone(),
            findings: report.findings.into_iter().map(|f| f.message).collect(),
        });
    } else {
        for finding in &report.findings {
            warn!("check: {}", finding.message);
        }
        warn!(
            "check: installing {} although the problems above would stop or change its boot (\"check\": \"error\" in {} refuses such a set)",
            dir.display(),
            spec.path.display()
        );
    }
    Ok(Some(report))
}

/// Stages a file deploy writes itself (README, SHA256SUMS).
fn stage_text(dir: &Path, name: &str, text: &str) -> Result<(TempPath, DeployedFile), Error> {
    let file = DeployedFile {
        name: name.into(),
        sha256: hex(&Sha256::digest(text.as_bytes())),
        size: text.len() as u64,
        linked: false,
    };
    Ok((stage_bytes(dir, text.as_bytes())?, file))
}

/// Creates `path` as a directory if missing (then it returns true); refuses a symlink or
/// anything else there, so that nothing can be redirected outside the placement's base.
fn ensure_real_dir(path: &Path, base_field: &'static str) -> Result<bool, safe_fs::Error> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(false),
        Ok(meta) if meta.file_type().is_symlink() => Err(safe_fs::Error::Unsafe {
            path: path.to_path_buf(),
            why: format!("it is a symlink, and vxn-blobs only writes into real directories below {base_field}; remove it"),
        }),
        Ok(_) => Err(safe_fs::Error::Unsafe {
            path: path.to_path_buf(),
            why: format!("it is not a directory; remove it or choose another {base_field}"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(path)
                .map_err(|e| {
                    let parent = path.parent().unwrap_or(path);
                    unwritable(base_field, parent, &e)
                        .unwrap_or_else(|| safe_fs::Error::io("create directory", path)(e))
                })?;
            Ok(true)
        }
        Err(e) => Err(safe_fs::Error::io("inspect", path)(e)),
    }
}

enum StageError {
    /// The build output is not what compile recorded.
    Mismatch(String),
    Other(Error),
}

impl From<Error> for StageError {
    fn from(e: Error) -> Self {
        StageError::Other(e)
    }
}

impl From<safe_fs::Error> for StageError {
    fn from(e: safe_fs::Error) -> Self {
        StageError::Other(e.into())
    }
}

/// Stages a build output in `dir`: a hardlink when `link` and possible, else a copy; either
/// way it is hashed as staged, so what gets renamed into place is what compile recorded.
fn stage_output(
    source: &Path,
    dir: &Path,
    record: &OutputRecord,
    link: bool,
) -> Result<(TempPath, bool), StageError> {
    let mismatch = |why: &str| {
        StageError::Mismatch(format!(
            "{} {why}; it is not the output the last compile recorded",
            source.display()
        ))
    };
    let original = match open_no_follow(source) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(mismatch("is missing")),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(mismatch("is a symlink")),
        Err(e) => return Err(safe_fs::Error::io("open", source)(e).into()),
    };
    let meta = original
        .metadata()
        .map_err(safe_fs::Error::io("inspect", source))?;
    if !meta.is_file() {
        return Err(mismatch("is not a regular file"));
    }

    if let Some(temp) = link.then(|| try_link(source, dir, &meta)).flatten() {
        let file = open_no_follow(&temp).map_err(safe_fs::Error::io("open", &temp))?;
        let (sha, size) = sha256_reader(&file).map_err(safe_fs::Error::io("read", source))?;
        if sha != record.sha256 || size != record.size {
            return Err(mismatch("has changed"));
        }
        return Ok((temp, true));
    }

    let mut temp = new_temp(dir)?;
    let temp_path = temp.path().to_path_buf();
    let (sha, size) = copy_hashing(&original, temp.as_file_mut(), source, &temp_path)?;
    if sha != record.sha256 || size != record.size {
        return Err(mismatch("has changed"));
    }
    temp.as_file()
        .sync_all()
        .map_err(safe_fs::Error::io("sync", &temp_path))?;
    Ok((temp.into_temp_path(), false))
}

/// Hardlinks `source` under a temporary name in `dir` and checks the link is that very file with
/// the deployed mode. `None` when linking is not possible (another filesystem, a protected
/// hardlink policy, a mode that cannot be set): the caller copies instead.
fn try_link(source: &Path, dir: &Path, meta: &fs::Metadata) -> Option<TempPath> {
    let linked = tempfile::Builder::new()
        .prefix(safe_fs::TEMP_PREFIX)
        .make_in(dir, |path| fs::hard_link(source, path));
    let temp = match linked {
        Ok(named) => named.into_temp_path(),
        Err(e) => {
            debug!(
                "cannot hardlink {} into {}: {e}; copying",
                source.display(),
                dir.display()
            );
            return None;
        }
    };
    let file = open_no_follow(&temp).ok()?;
    let link_meta = file.metadata().ok()?;
    if link_meta.dev() != meta.dev() || link_meta.ino() != meta.ino() {
        debug!("{} was replaced while linking; copying", source.display());
        return None;
    }
    if link_meta.mode() & 0o7777 != OUTPUT_MODE {
        // Shared with the build output; compile makes it 0644 already, so this only happens
        // for outputs of another tool run, and fails (then we copy) if we do not own it.
        if let Err(e) = file.set_permissions(fs::Permissions::from_mode(OUTPUT_MODE)) {
            debug!("cannot set the mode of {}: {e}; copying", source.display());
            return None;
        }
    }
    Some(temp)
}

/// Copies `from` into `to` and hashes the bytes on the way.
fn copy_hashing(
    mut from: &File,
    to: &mut File,
    from_path: &Path,
    to_path: &Path,
) -> Result<(String, u64), safe_fs::Error> {
    use safe_fs::Error;
    use std::io::Write;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", from_path)(e)),
        };
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n])
            .map_err(Error::io("write", to_path))?;
        size += n as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

/// Names listed in an earlier SHA256SUMS: the files an earlier deploy installed. Only plain
/// names count; a missing, symlinked or unreadable file lists nothing.
fn read_manifest(path: &Path) -> Vec<String> {
    let mut text = String::new();
    let read = open_no_follow(path).and_then(|f| f.take(1 << 20).read_to_string(&mut text));
    if let Err(e) = read {
        if e.kind() != io::ErrorKind::NotFound {
            warn!(
                "cannot read the earlier {}: {e}; files it listed are left in place",
                path.display()
            );
        }
        return Vec::new();
    }
    text.lines()
        .filter_map(parse_sums_line)
        .filter(|(_, name)| !name.starts_with('.') && !name.contains('/'))
        .map(|(_, name)| name.to_string())
        .collect()
}

/// The seed's README, with a reproducible date, the files that are really there and the tool
/// that assembled them (a rebuilt tool shows here even when the blobs come out the same).
pub fn readme_text(spec: &Spec, kernel_name: Option<&str>) -> String {
    let date = match spec.source_date_epoch {
        Some(secs) => format_date(i64::from(secs)),
        None => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            format_date(now)
        }
    };
    let mut files = Vec::new();
    if let Some(name) = kernel_name {
        files.push((name, "Kernel image (Xen PV-capable)"));
    }
    files.push((INITRAMFS, "Tiny initramfs (busybox + preinit)"));
    files.push((ROOTFS, "Root filesystem with container tools"));
    files.push((SUMS, "SHA-256 of every file here (sha256sum -c SHA256SUMS)"));
    let width = files.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut text = format!(
        "vxn Boot Blobs (Xen DomU)\n\
         ==========================\n\
         \n\
         Built for: {}\n\
         Machine: {}\n\
         Multiconfig: {}\n\
         Source runtime: {}\n\
         Date: {date}\n\
         Assembled by: {}\n\
         \n\
         Files:\n",
        spec.target_arch,
        spec.machine,
        spec.multiconfig,
        spec.runtime,
        tool_identity()
    );
    for (name, what) in files {
        text.push_str(&format!("  {name:<width$} - {what}\n"));
    }
    text.push_str(
        "\n\
         Boot flow:\n\
         \x20 xl create <domain.cfg>\n\
         \x20 -> Xen boots kernel + initramfs in DomU\n\
         \x20 -> preinit detects Xen, mounts rootfs.img from /dev/xvda\n\
         \x20 -> switch_root into rootfs.img\n\
         \x20 -> init script runs container commands\n",
    );
    text
}

/// Formats seconds since the epoch the way `date -u` does in the C locale:
/// "Thu Nov 26 15:18:25 UTC 2026" (day of month padded with a space, like `%e`).
pub fn format_date(secs: i64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    let is_leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    // Walk whole years, then whole months; SOURCE_DATE_EPOCH is a u32, so at most 136 years.
    let mut year = 1970;
    let mut rest = days;
    loop {
        let len = if is_leap(year) { 366 } else { 365 };
        if rest < 0 {
            year -= 1;
            rest += if is_leap(year) { 366 } else { 365 };
        } else if rest >= len {
            rest -= len;
            year += 1;
        } else {
            break;
        }
    }
    let month_lengths = [
        31,
        if is_leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while rest >= month_lengths[month] {
        rest -= month_lengths[month];
        month += 1;
    }
    format!(
        "{weekday} {} {:>2} {:02}:{:02}:{:02} UTC {year}",
        MONTHS[month],
        rest + 1,
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_like_date_u() {
        assert_eq!(format_date(0), "Thu Jan  1 00:00:00 UTC 1970");
        assert_eq!(format_date(1_795_706_305), "Thu Nov 26 15:18:25 UTC 2026");
        assert_eq!(format_date(951_782_400), "Tue Feb 29 00:00:00 UTC 2000");
        assert_eq!(format_date(4_294_967_295), "Sun Feb  7 06:28:15 UTC 2106");
        assert_eq!(format_date(1_302_044_400), "Tue Apr  5 23:00:00 UTC 2011");
    }

    #[test]
    fn dates_agree_with_the_date_command() {
        // GNU date is the reference the README format imitates; it is on every build host.
        let Ok(_) = std::process::Command::new("date").arg("--version").output() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "date(1) missing"
            );
            return;
        };
        let mut secs: i64 = 0;
        while secs < 4_294_967_295 {
            let out = std::process::Command::new("date")
                .args(["-u", "-d", &format!("@{secs}")])
                .env("LC_ALL", "C")
                .env("TZ", "UTC")
                .output()
                .unwrap();
            let expected = String::from_utf8(out.stdout).unwrap();
            assert_eq!(format_date(secs), expected.trim_end(), "@{secs}");
            secs += 86_399 * 397 + 3_607;
        }
    }

    #[test]
    fn manifest_takes_only_plain_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SUMS);
        let sha = "0".repeat(64);
        fs::write(
            &path,
            format!("{sha}  bzImage\n{sha}  ../escape\n{sha}  .hidden\nnot a line\n{sha} *Image\n"),
        )
        .unwrap();
        assert_eq!(read_manifest(&path), vec!["bzImage", "Image"]);
    }
}
