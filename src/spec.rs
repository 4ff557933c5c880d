//! The JSON spec that tells `compile` and `deploy` what to build: read in two stages.
//!
//! [`RawSpec`] is the file as written, checked only for shape by serde (unknown keys are an error
//! that names the key, so a typo never silently falls back to a default). [`Spec`] is what the
//! tool works from: paths resolved against the spec's directory, modes parsed, names checked so
//! that nothing derived from the spec can write outside `build_dir` or `deploy_dir`, and
//! `source_date_epoch` taken from the environment when the spec leaves it out. docs/spec.md
//! documents the format; docs/spec.schema.json describes the same rules for other tools.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::blob_set;
use crate::kernel::{KernelArch, SUPPORTED_TARGET_ARCHES};
use crate::squashfs::{BlockCacheOptions, Compression, Injection, DEFAULT_MAX_SIZE};

/// The only schema version this tool reads.
pub const SCHEMA_VERSION: u64 = 1;

/// File names `deploy` writes itself; `kernel_name` must not collide with them.
pub const RESERVED_NAMES: [&str; 4] = blob_set::DEPLOYED_NAMES;

/// Largest spec file read: a real one is a few hundred bytes, and reading stops here even if
/// the path names something endless.
const MAX_SPEC_BYTES: u64 = 1 << 20;

/// Where the vxn CLI and vxn-oci-runtime look for the blobs on the Dom0; `install_dir`'s default
/// is this plus the blob arch.
pub const DEFAULT_INSTALL_ROOT: &str = "/usr/share/vxn";

/// Environment variable read when the spec has no `source_date_epoch`.
pub const SOURCE_DATE_EPOCH_VAR: &str = "SOURCE_DATE_EPOCH";

/// The spec file as written (schema 1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    pub schema: u64,
    pub runtime: String,
    pub machine: String,
    pub multiconfig: String,
    pub target_arch: String,
    pub blob_arch: String,
    pub initramfs: String,
    pub rootfs: String,
    pub kernel: String,
    pub kernel_name: String,
    pub inject: Vec<RawInjection>,
    pub build_dir: String,
    pub deploy_dir: String,
    /// Where `install` puts the blobs below its `--destdir`; default `/usr/share/vxn/<blob_arch>`.
    #[serde(default)]
    pub install_dir: Option<String>,
    #[serde(default)]
    pub kernel_required: Option<bool>,
    #[serde(default)]
    pub compression: Option<RawCompression>,
    #[serde(default)]
    pub source_date_epoch: Option<u32>,
    #[serde(default)]
    pub jobs: Option<usize>,
    #[serde(default)]
    pub check: Option<RawCheck>,
    #[serde(default)]
    pub block_cache: Option<RawBlockCache>,
}

/// The `block_cache` object as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBlockCache {
    pub dir: String,
    #[serde(default)]
    pub max_size: Option<RawSize>,
    #[serde(default)]
    pub read_only: Option<bool>,
}

/// A size: a number of bytes, or text such as "5G" (see [`parse_size`]).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

/// One `inject` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInjection {
    pub source: String,
    pub dest: String,
    /// Octal permission bits as a string ("0755"), so that JSON's lack of octal numbers cannot
    /// turn 0755 into 755 decimal.
    pub mode: String,
}

/// The `compression` values.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawCompression {
    Xz,
    Keep,
}

/// The `check` values: what deploy does with what `vxn-blobs check` would find.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RawCheck {
    Off,
    Warn,
    Error,
}

/// A spec ready to work from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The spec file itself, for messages ("run compile --spec ...").
    pub path: PathBuf,
    pub runtime: String,
    pub machine: String,
    pub multiconfig: String,
    /// As written, for the README's "Built for".
    pub target_arch: String,
    pub kernel_arch: KernelArch,
    /// A single path component: the directory under `deploy_dir/vxn/`.
    pub blob_arch: String,
    pub initramfs: PathBuf,
    pub rootfs: PathBuf,
    pub kernel: PathBuf,
    /// A single path component, not one of [`RESERVED_NAMES`].
    pub kernel_name: String,
    pub inject: Vec<Injection>,
    pub build_dir: PathBuf,
    pub deploy_dir: PathBuf,
    /// Absolute and normalized: `install` joins it to its `--destdir`.
    pub install_dir: PathBuf,
    pub kernel_required: bool,
    pub compression: Compression,
    pub source_date_epoch: Option<u32>,
    /// Worker threads for the engine; 0 means all cores. Does not change any output byte.
    pub jobs: usize,
    /// What deploy does with the boot check's findings. Does not change any output byte.
    pub check: CheckMode,
    /// Where compile keeps and finds compressed blocks. Does not change any output byte.
    pub block_cache: Option<BlockCacheOptions>,
}

/// What deploy and install do with the boot check's findings (the spec's `check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CheckMode {
    /// Do not check.
    Off,
    /// Log each finding as a warning and install anyway.
    #[default]
    Warn,
    /// Install nothing when there is a finding.
    Error,
}

/// Why a spec could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec file could not be read.
    #[error("cannot read spec {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON of the right shape (serde's message names the key and position).
    #[error("spec {} is invalid: {detail}; see docs/spec.md", path.display())]
    Parse { path: PathBuf, detail: String },
    /// The file declares another schema version.
    #[error("spec {} has schema {found}, but this vxn-blobs reads schema {SCHEMA_VERSION}", path.display())]
    Schema { path: PathBuf, found: String },
    /// A value has the right type but is not acceptable.
    #[error("spec {}: \"{field}\" {problem}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
    /// SOURCE_DATE_EPOCH in the environment is not a usable timestamp.
    #[error("environment variable {SOURCE_DATE_EPOCH_VAR}={value:?} is not a number of seconds between 0 and 4294967295")]
    Environment { value: String },
}

impl Spec {
    /// Reads and resolves the spec at `path`, taking SOURCE_DATE_EPOCH from the environment when
    /// the spec has no `source_date_epoch`.
    pub fn load(path: &Path) -> Result<Spec, Error> {
        use std::io::Read;
        let read_error = |source| Error::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut text = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_SPEC_BYTES + 1).read_to_end(&mut text))
            .map_err(read_error)?;
        if text.len() as u64 > MAX_SPEC_BYTES {
            return Err(Error::Parse {
                path: path.to_path_buf(),
                detail: format!(
                    "it is larger than {} MiB, which no spec is",
                    MAX_SPEC_BYTES >> 20
                ),
            });
        }
        let raw = RawSpec::parse(&text, path)?;
        let env = std::env::var_os(SOURCE_DATE_EPOCH_VAR);
        raw.resolve(path, env.as_deref())
    }

    /// The spec's contribution to the compile digest: every field that can change an output
    /// byte or the deploy, in a fixed order, each length-prefixed so no two specs serialize alike.
    ///
    /// `jobs` and `block_cache` are left out on purpose: they only change how fast the same
    /// bytes are made, and a different core count or cache on the next run must not throw away
    /// a valid build. `check` is left out for the same reason (it decides whether deploy installs, not what), so turning it up
    /// between compile and deploy needs no recompile. The spec's own path is left out too:
    /// moving the spec file (not what it says) changes nothing.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |key: &str, value: &[u8]| {
            out.extend_from_slice(key.as_bytes());
            out.push(0);
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value);
        };
        put("schema", SCHEMA_VERSION.to_string().as_bytes());
        put("runtime", self.runtime.as_bytes());
        put("machine", self.machine.as_bytes());
        put("multiconfig", self.multiconfig.as_bytes());
        put("target_arch", self.target_arch.as_bytes());
        put("blob_arch", self.blob_arch.as_bytes());
        put("initramfs", self.initramfs.as_os_str().as_bytes());
        put("rootfs", self.rootfs.as_os_str().as_bytes());
        put("kernel", self.kernel.as_os_str().as_bytes());
        put("kernel_name", self.kernel_name.as_bytes());
        put("inject.len", self.inject.len().to_string().as_bytes());
        for injection in &self.inject {
            put("inject.source", injection.source.as_os_str().as_bytes());
            put("inject.dest", injection.dest.as_bytes());
            put("inject.mode", format!("{:o}", injection.mode).as_bytes());
        }
        put("build_dir", self.build_dir.as_os_str().as_bytes());
        put("deploy_dir", self.deploy_dir.as_os_str().as_bytes());
        put("install_dir", self.install_dir.as_os_str().as_bytes());
        put(
            "kernel_required",
            if self.kernel_required { b"1" } else { b"0" },
        );
        put(
            "compression",
            match self.compression {
                Compression::Xz => b"xz",
                Compression::Keep => b"keep",
            },
        );
        put(
            "source_date_epoch",
            self.source_date_epoch
                .map(|s| s.to_string())
                .unwrap_or_default()
                .as_bytes(),
        );
        out
    }

    /// The hint that tells how to produce a missing multiconfig image.
    pub fn build_hint(&self, image: &str) -> String {
        format!(
            "Build it first with: bitbake mc:{}:{}-{}",
            self.multiconfig, self.runtime, image
        )
    }
}

impl RawSpec {
    /// Parses the JSON text of the spec at `path` (which only names it in errors).
    ///
    /// The schema version is checked before the shape, so that a file of a later schema is
    /// reported as such rather than as a list of unknown keys.
    pub fn parse(text: &[u8], path: &Path) -> Result<RawSpec, Error> {
        #[derive(Deserialize)]
        struct Version {
            schema: Option<serde_json::Value>,
        }
        let parse_error = |e: serde_json::Error| Error::Parse {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let version: Version = serde_json::from_slice(text).map_err(parse_error)?;
        match version.schema {
            Some(serde_json::Value::Number(n)) if n.as_u64() == Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(Error::Schema {
                    path: path.to_path_buf(),
                    found: other.to_string(),
                })
            }
            None => {
                return Err(Error::Parse {
                    path: path.to_path_buf(),
                    detail: "missing field `schema` (write \"schema\": 1)".into(),
                })
            }
        }
        serde_json::from_slice(text).map_err(parse_error)
    }

    /// Checks every value and resolves paths against the directory of `spec_path`.
    ///
    /// `env_source_date_epoch` is the environment's SOURCE_DATE_EPOCH, passed in so that callers
    /// (and tests) decide where it comes from.
    pub fn resolve(
        self,
        spec_path: &Path,
        env_source_date_epoch: Option<&OsStr>,
    ) -> Result<Spec, Error> {
        let invalid = |field: &str, problem: String| Error::Invalid {
            path: spec_path.to_path_buf(),
            field: field.to_string(),
            problem,
        };
        let base = spec_base_dir(spec_path).map_err(|source| Error::Read {
            path: spec_path.to_path_buf(),
            source,
        })?;
        let resolve_path = |field: &str, value: &str| -> Result<PathBuf, Error> {
            if value.is_empty() {
                return Err(invalid(field, "is empty; give a path".into()));
            }
            if value.contains('\0') {
                return Err(invalid(field, "contains a NUL character".into()));
            }
            Ok(base.join(value))
        };

        for (field, value) in [
            ("runtime", &self.runtime),
            ("machine", &self.machine),
            ("multiconfig", &self.multiconfig),
        ] {
            check_word(value).map_err(|problem| invalid(field, problem))?;
        }
        let kernel_arch = KernelArch::from_target_arch(&self.target_arch).ok_or_else(|| {
            invalid(
                "target_arch",
                format!(
                    "is {:?}, which vxn does not build for; use one of {SUPPORTED_TARGET_ARCHES}",
                    self.target_arch
                ),
            )
        })?;
        check_file_name(&self.blob_arch).map_err(|p| invalid("blob_arch", p))?;
        check_file_name(&self.kernel_name).map_err(|p| invalid("kernel_name", p))?;
        if RESERVED_NAMES.contains(&self.kernel_name.as_str()) {
            return Err(invalid(
                "kernel_name",
                format!(
                    "is {:?}, which deploy writes itself; use the kernel's image type such as {}",
                    self.kernel_name,
                    kernel_arch.image_type()
                ),
            ));
        }

        let mut inject = Vec::with_capacity(self.inject.len());
        for (i, raw) in self.inject.iter().enumerate() {
            let field = |name: &str| format!("inject[{i}].{name}");
            let source = resolve_path(&field("source"), &raw.source)?;
            check_dest(&raw.dest).map_err(|p| invalid(&field("dest"), p))?;
            if inject.iter().any(|j: &Injection| j.dest == raw.dest) {
                return Err(invalid(
                    &field("dest"),
                    format!("is {:?} a second time; inject each file once", raw.dest),
                ));
            }
            let mode = parse_mode(&raw.mode).map_err(|p| invalid(&field("mode"), p))?;
            inject.push(Injection {
                source,
                dest: raw.dest.clone(),
                mode,
            });
        }

        let install_dir = match &self.install_dir {
            Some(dir) => {
                check_absolute(dir, "on the target such as \"/usr/share/vxn/x86_64\"")
                    .map_err(|p| invalid("install_dir", p))?;
                PathBuf::from(dir)
            }
            None => Path::new(DEFAULT_INSTALL_ROOT).join(&self.blob_arch),
        };

        let block_cache = match &self.block_cache {
            None => None,
            Some(raw) => Some(BlockCacheOptions {
                dir: resolve_path("block_cache.dir", &raw.dir)?,
                max_size: match &raw.max_size {
                    None => DEFAULT_MAX_SIZE,
                    Some(RawSize::Bytes(0)) => return Err(invalid(
                        "block_cache.max_size",
                        "is 0; give a size such as \"5G\", or leave block_cache out for no cache"
                            .into(),
                    )),
                    Some(RawSize::Bytes(n)) => *n,
                    Some(RawSize::Text(text)) => {
                        parse_size(text).map_err(|p| invalid("block_cache.max_size", p))?
                    }
                },
                read_only: raw.read_only.unwrap_or(false),
            }),
        };

        let source_date_epoch = match (self.source_date_epoch, env_source_date_epoch) {
            (Some(value), _) => Some(value),
            (None, Some(value)) => Some(parse_source_date_epoch(value)?),
            (None, None) => None,
        };

        Ok(Spec {
            path: spec_path.to_path_buf(),
            initramfs: resolve_path("initramfs", &self.initramfs)?,
            rootfs: resolve_path("rootfs", &self.rootfs)?,
            kernel: resolve_path("kernel", &self.kernel)?,
            build_dir: resolve_path("build_dir", &self.build_dir)?,
            deploy_dir: resolve_path("deploy_dir", &self.deploy_dir)?,
            install_dir,
            runtime: self.runtime,
            machine: self.machine,
            multiconfig: self.multiconfig,
            target_arch: self.target_arch,
            kernel_arch,
            blob_arch: self.blob_arch,
            kernel_name: self.kernel_name,
            inject,
            kernel_required: self.kernel_required.unwrap_or(false),
            compression: match self.compression {
                None | Some(RawCompression::Xz) => Compression::Xz,
                Some(RawCompression::Keep) => Compression::Keep,
            },
            source_date_epoch,
            jobs: self.jobs.unwrap_or(0),
            check: match self.check {
                None | Some(RawCheck::Warn) => CheckMode::Warn,
                Some(RawCheck::Off) => CheckMode::Off,
                Some(RawCheck::Error) => CheckMode::Error,
            },
            block_cache,
        })
    }
}

/// The directory relative spec paths start from, made absolute so that the resolved spec (and
/// its digest) does not depend on where the tool was started.
fn spec_base_dir(spec_path: &Path) -> std::io::Result<PathBuf> {
    let parent = spec_path.parent().unwrap_or(Path::new(""));
    if parent.is_absolute() {
        Ok(parent.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(parent))
    }
}

/// Parses SOURCE_DATE_EPOCH: decimal seconds that fit squashfs's 32-bit timestamps.
pub fn parse_source_date_epoch(value: &OsStr) -> Result<u32, Error> {
    let text = value.to_string_lossy();
    text.trim().parse::<u32>().map_err(|_| Error::Environment {
        value: text.into_owned(),
    })
}

/// Reads SOURCE_DATE_EPOCH from the environment, if set.
pub fn source_date_epoch_from_env() -> Result<Option<u32>, Error> {
    std::env::var_os(SOURCE_DATE_EPOCH_VAR)
        .map(|v| parse_source_date_epoch(&v))
        .transpose()
}

/// Parses an octal mode string such as "0755" or "644": 3 or 4 octal digits, optionally after
/// one more leading 0 ("04755"), the same rule meta-vxn applies to VXN_INJECT.
pub fn parse_mode(text: &str) -> Result<u16, String> {
    let digits = match text.strip_prefix('0') {
        Some(rest) if rest.len() == 4 => rest,
        _ => text,
    };
    if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!(
            "is {text:?}, not an octal mode; write 3 or 4 octal digits such as \"0755\""
        ));
    }
    u16::from_str_radix(digits, 8).map_err(|e| format!("is {text:?}: {e}"))
}

/// Parses a size: a whole number of bytes, optionally followed by K, M, G or T (powers of 1024,
/// either case), such as "5G" or "512M". Zero is refused: no limit that small is meant.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let usage = || {
        format!(
            "is {text:?}, not a size; write bytes or a number with K, M, G or T, such as \"5G\""
        )
    };
    let (digits, shift) = match text.as_bytes().last().map(u8::to_ascii_uppercase) {
        Some(b'K') => (&text[..text.len() - 1], 10),
        Some(b'M') => (&text[..text.len() - 1], 20),
        Some(b'G') => (&text[..text.len() - 1], 30),
        Some(b'T') => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(usage());
    }
    let n: u64 = digits.parse().map_err(|_| usage())?;
    match n.checked_mul(1u64 << shift) {
        Some(0) => Err(format!("is {text:?}; a size must be larger than 0")),
        Some(bytes) => Ok(bytes),
        None => Err(format!("is {text:?}, more bytes than can be counted")),
    }
}

/// A value that ends up in the README and in bitbake hints: one line of visible text.
fn check_word(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "is {value:?}; it must not contain spaces or control characters"
        ));
    }
    Ok(())
}

/// A name used as one path component under a directory the tool writes to.
fn check_file_name(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "is {value:?}; it must be a plain file name (letters, digits, '.', '_', '-', '+')"
        ))
    }
}

/// An absolute, normalized path inside the image, not the root itself.
fn check_dest(dest: &str) -> Result<(), String> {
    check_absolute(dest, "inside the image such as \"/vxn-init.sh\"")
}

/// An absolute, normalized path (no empty, "." or ".." components), not "/" itself; `example`
/// completes "it must be an absolute path ..." in the message.
fn check_absolute(dest: &str, example: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("is {dest:?}; {why}"));
    if !dest.starts_with('/') {
        return bad(&format!("it must be an absolute path {example}"));
    }
    if dest.contains('\0') {
        return bad("it contains a NUL character");
    }
    if dest.ends_with('/') || dest.contains("//") {
        return bad("it must name a file, without empty components or a trailing '/'");
    }
    // Checked on the text: Path::components would silently drop "." components.
    if dest[1..].split('/').any(|c| c == "." || c == "..") {
        return bad("it must not contain '.' or '..' components");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
      "schema": 1,
      "runtime": "vdkr",
      "machine": "qemux86-64",
      "multiconfig": "vruntime-x86-64",
      "target_arch": "x86_64",
      "blob_arch": "x86_64",
      "initramfs": "in/initramfs.cpio.gz",
      "rootfs": "/abs/rootfs.squashfs",
      "kernel": "in/bzImage",
      "kernel_name": "bzImage",
      "inject": [
        {"source": "vxn-init.sh", "dest": "/vxn-init.sh", "mode": "0755"},
        {"source": "vcontainer-init-common.sh", "dest": "/vcontainer-init-common.sh", "mode": "0755"}
      ],
      "build_dir": "build",
      "deploy_dir": "deploy"
    }"#;

    fn load(text: &str, env: Option<&str>) -> Result<Spec, Error> {
        let path = Path::new("/specs/spec.json");
        RawSpec::parse(text.as_bytes(), path)?.resolve(path, env.map(OsStr::new))
    }

    fn with(key: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
        v[key] = serde_json::from_str(value).unwrap();
        v.to_string()
    }

    #[test]
    fn resolves_relative_paths_against_the_spec_directory() {
        let spec = load(EXAMPLE, None).unwrap();
        assert_eq!(spec.initramfs, Path::new("/specs/in/initramfs.cpio.gz"));
        assert_eq!(spec.rootfs, Path::new("/abs/rootfs.squashfs"));
        assert_eq!(spec.build_dir, Path::new("/specs/build"));
        assert_eq!(spec.inject[0].source, Path::new("/specs/vxn-init.sh"));
        assert_eq!(spec.inject[1].mode, 0o755);
        assert_eq!(spec.compression, Compression::Xz);
        assert!(!spec.kernel_required);
        assert_eq!(spec.jobs, 0);
        assert_eq!(spec.check, CheckMode::Warn);
        assert_eq!(spec.source_date_epoch, None);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = load(&with("compresion", "\"xz\""), None).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `compresion`"),
            "{err}"
        );
        let text = EXAMPLE.replace("\"mode\": \"0755\"}", "\"mode\": \"0755\", \"owner\": 0}");
        let err = load(&text, None).unwrap_err();
        assert!(err.to_string().contains("unknown field `owner`"), "{err}");
    }

    #[test]
    fn schema_other_than_1_is_reported_as_such() {
        let err = load(&with("schema", "2"), None).unwrap_err();
        assert!(matches!(err, Error::Schema { .. }), "{err}");
        let err = load(&with("schema", "\"1\""), None).unwrap_err();
        assert!(matches!(err, Error::Schema { .. }), "{err}");
    }

    #[test]
    fn source_date_epoch_comes_from_spec_then_environment() {
        assert_eq!(
            load(EXAMPLE, Some("1700000000")).unwrap().source_date_epoch,
            Some(1700000000)
        );
        let spec = load(&with("source_date_epoch", "42"), Some("1700000000")).unwrap();
        assert_eq!(spec.source_date_epoch, Some(42));
        let err = load(EXAMPLE, Some("yesterday")).unwrap_err();
        assert!(
            err.to_string().contains("SOURCE_DATE_EPOCH=\"yesterday\""),
            "{err}"
        );
        assert!(load(&with("source_date_epoch", "-1"), None).is_err());
    }

    #[test]
    fn modes_are_octal_strings() {
        assert_eq!(parse_mode("0755"), Ok(0o755));
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert_eq!(parse_mode("4755"), Ok(0o4755));
        assert_eq!(parse_mode("04755"), Ok(0o4755));
        assert_eq!(parse_mode("00755"), Ok(0o755));
        for bad in ["755a", "0888", "", "75", "17555", "000755", "rwxr-xr-x"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
        let text = EXAMPLE.replacen("\"0755\"", "\"0799\"", 1);
        let err = load(&text, None).unwrap_err();
        assert!(err.to_string().contains("\"inject[0].mode\""), "{err}");
        // A JSON number is the classic mistake (0755 is not JSON, 755 is decimal).
        let text = EXAMPLE.replacen("\"0755\"", "755", 1);
        assert!(matches!(
            load(&text, None).unwrap_err(),
            Error::Parse { .. }
        ));
    }

    #[test]
    fn names_that_could_escape_the_output_directories_are_rejected() {
        for (key, value) in [
            ("blob_arch", "\"../x86_64\""),
            ("blob_arch", "\"..\""),
            ("blob_arch", "\"a/b\""),
            ("kernel_name", "\"/boot/bzImage\""),
            ("kernel_name", "\"README\""),
            ("kernel_name", "\"\""),
        ] {
            let err = load(&with(key, value), None).unwrap_err();
            assert!(err.to_string().contains(&format!("\"{key}\"")), "{err}");
        }
        for dest in ["vxn-init.sh", "/", "/a/../b", "/./a", "/a/", "//a"] {
            let text = EXAMPLE.replacen("\"/vxn-init.sh\"", &format!("{dest:?}"), 1);
            let err = load(&text, None).unwrap_err();
            assert!(err.to_string().contains("inject[0].dest"), "{dest}: {err}");
        }
        let text = EXAMPLE.replacen("/vcontainer-init-common.sh", "/vxn-init.sh", 1);
        assert!(load(&text, None)
            .unwrap_err()
            .to_string()
            .contains("a second time"));
    }

    #[test]
    fn unsupported_target_arch_lists_the_supported_ones() {
        let err = load(&with("target_arch", "\"riscv64\""), None).unwrap_err();
        assert!(
            err.to_string().contains("x86_64, i686, i586, aarch64, arm"),
            "{err}"
        );
    }

    #[test]
    fn install_dir_defaults_to_usr_share_vxn_and_must_be_absolute() {
        let spec = load(EXAMPLE, None).unwrap();
        assert_eq!(
            spec.install_dir,
            Path::new(DEFAULT_INSTALL_ROOT).join(&spec.blob_arch)
        );
        let spec = load(&with("install_dir", "\"/opt/vxn/x\""), None).unwrap();
        assert_eq!(spec.install_dir, Path::new("/opt/vxn/x"));
        for bad in [
            "\"usr/share/vxn\"",
            "\"/usr/../etc\"",
            "\"/usr/share/\"",
            "\"/\"",
        ] {
            let err = load(&with("install_dir", bad), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains("\"install_dir\""), "{bad}: {err}");
        }
    }

    #[test]
    fn canonical_bytes_change_with_every_field_but_jobs_and_check() {
        let base = load(EXAMPLE, None).unwrap().canonical_bytes();
        for (key, value) in [
            ("runtime", "\"vpdmn\""),
            ("machine", "\"qemux86\""),
            ("multiconfig", "\"mc2\""),
            ("target_arch", "\"i686\""),
            ("blob_arch", "\"x86\""),
            ("initramfs", "\"other.cpio.gz\""),
            ("rootfs", "\"other.squashfs\""),
            ("kernel", "\"other\""),
            ("kernel_name", "\"vmlinuz\""),
            ("build_dir", "\"b2\""),
            ("deploy_dir", "\"d2\""),
            ("install_dir", "\"/opt/vxn\""),
            ("kernel_required", "true"),
            ("compression", "\"keep\""),
            ("source_date_epoch", "7"),
        ] {
            let changed = load(&with(key, value), None).unwrap().canonical_bytes();
            assert_ne!(base, changed, "{key}");
        }
        let text = EXAMPLE.replacen("\"0755\"", "\"0750\"", 1);
        assert_ne!(base, load(&text, None).unwrap().canonical_bytes());
        for (key, value) in [("jobs", "3"), ("check", "\"error\""), ("check", "\"off\"")] {
            let same = load(&with(key, value), None).unwrap().canonical_bytes();
            assert_eq!(base, same, "{key}");
        }
    }

    #[test]
    fn check_takes_off_warn_or_error() {
        assert_eq!(
            load(&with("check", "\"error\""), None).unwrap().check,
            CheckMode::Error
        );
        assert_eq!(
            load(&with("check", "\"off\""), None).unwrap().check,
            CheckMode::Off
        );
        assert_eq!(
            load(&with("check", "null"), None).unwrap().check,
            CheckMode::Warn
        );
        let err = load(&with("check", "\"strict\""), None).unwrap_err();
        assert!(
            err.to_string().contains("unknown variant `strict`"),
            "{err}"
        );
    }

    #[test]
    fn the_block_cache_resolves_with_its_defaults_and_stays_out_of_the_digest() {
        let plain = load(EXAMPLE, None).unwrap();
        assert_eq!(plain.block_cache, None);
        let spec = load(&with("block_cache", r#"{"dir": "cache"}"#), None).unwrap();
        assert_eq!(
            spec.block_cache,
            Some(BlockCacheOptions {
                dir: PathBuf::from("/specs/cache"),
                max_size: DEFAULT_MAX_SIZE,
                read_only: false,
            })
        );
        assert_eq!(spec.canonical_bytes(), plain.canonical_bytes());
        let spec = load(
            &with(
                "block_cache",
                r#"{"dir": "/c", "max_size": "512M", "read_only": true}"#,
            ),
            None,
        )
        .unwrap();
        let cache = spec.block_cache.unwrap();
        assert_eq!((cache.max_size, cache.read_only), (512 << 20, true));
        let spec = load(
            &with("block_cache", r#"{"dir": "/c", "max_size": 4096}"#),
            None,
        )
        .unwrap();
        assert_eq!(spec.block_cache.unwrap().max_size, 4096);
        assert_eq!(
            load(&with("block_cache", "null"), None)
                .unwrap()
                .block_cache,
            None
        );
        for (value, says) in [
            (
                r#"{"dir": "/c", "max_size": "5X"}"#,
                "\"block_cache.max_size\" is \"5X\", not a size",
            ),
            (
                r#"{"dir": "/c", "max_size": 0}"#,
                "\"block_cache.max_size\" is 0",
            ),
            (r#"{"dir": ""}"#, "\"block_cache.dir\" is empty"),
            (r#"{"dir": "/c", "size": "1G"}"#, "unknown field `size`"),
            (r#"{"max_size": "1G"}"#, "missing field `dir`"),
        ] {
            let err = load(&with("block_cache", value), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{value}: {err}");
        }
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("5G"), Ok(5 << 30));
        assert_eq!(parse_size("5g"), Ok(5 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("640k"), Ok(640 << 10));
        for bad in [
            "",
            "G",
            "5 G",
            "-1",
            "1.5G",
            "5GB",
            "0",
            "0M",
            "99999999999T",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }
}
