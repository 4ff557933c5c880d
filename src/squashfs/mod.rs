//! The squashfs engine: inject files into an existing squashfs 4.0 image faithfully.
//!
//! The seed recipe unpacked the whole image and packed it again, which is slow and, without
//! pseudo, loses ownership, xattrs and device nodes. This engine instead keeps the source's data
//! region (raw when compressor and block size stay, transcoded block by block when they do not)
//! and re-encodes only the metadata tables, so everything it does not touch survives exactly.

use std::path::{Path, PathBuf};

/// One file to place into the image, as `install -m MODE SOURCE DEST` would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// The file on the host whose bytes are injected.
    pub source: PathBuf,
    /// Absolute path inside the image; its parent directory must already exist there.
    pub dest: String,
    /// Permission bits (up to 0o7777) of the injected file.
    pub mode: u16,
}

/// Which compressor the output uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// xz, as `mksquashfs -comp xz` writes it by default (what the seed produced).
    #[default]
    Xz,
    /// The input's own compressor and options: the data region is copied untouched.
    Keep,
}

/// How an injection runs.
#[derive(Debug, Clone, Default)]
pub struct InjectOptions {
    pub compression: Compression,
    /// Worker threads for transcoding data blocks; 0 means the available cores.
    pub jobs: usize,
    /// mtime of injected files and the output's mkfs time; `None` keeps the input's mkfs time.
    pub source_date_epoch: Option<u32>,
    /// A previous output of the engine: blocks its record (`<it>.vxn-reuse`) knows are copied
    /// from it instead of being compressed again, and the output gets a record of its own
    /// ([`record_path`]) for the next run. Only the time changes, never a byte of the output.
    pub reuse: Option<PathBuf>,
    /// A block cache: blocks to compress are taken from it when it has them (after those
    /// copied from `reuse`), and every block of the output is kept in it. Only the time
    /// changes, never a byte of the output.
    pub block_cache: Option<BlockCacheOptions>,
}

/// What an injection did, for logs and for callers that want to show it.
#[derive(Debug, Clone)]
pub struct InjectReport {
    pub input_compressor: String,
    pub output_compressor: String,
    /// True when the source's data blocks were copied byte for byte.
    pub data_kept_raw: bool,
    pub inode_count: u32,
    pub bytes_written: u64,
    /// Source blocks transcoded, how many of them were copied from the previous output, and
    /// how many taken from the block cache.
    pub blocks_transcoded: u64,
    pub blocks_reused: u64,
    pub blocks_from_cache: u64,
    /// The previous output blocks were to be copied from, when there was one to look at.
    pub reused_from: Option<PathBuf>,
    /// What the block cache did, or why it was not used, when one was given.
    pub block_cache: Option<BlockCacheReport>,
    /// The record written beside the output (with [`InjectOptions::reuse`], when the data was
    /// transcoded).
    pub record: Option<PathBuf>,
    /// The output's sha256 (hex) and size when the engine hashed it for the record, so that a
    /// caller need not read it again.
    pub output_sha256: Option<(String, u64)>,
}

impl InjectReport {
    /// Where the transcoded data blocks came from, in one line ("copied 2770 of 2851 blocks
    /// from .../rootfs.img, took 0 from the block cache ..., compressed 81"): what compile's log
    /// and summary show. `None` when nothing could have spared a compression.
    pub fn block_sources(&self) -> Option<String> {
        if self.data_kept_raw || (self.reused_from.is_none() && self.block_cache.is_none()) {
            return None;
        }
        let compressed = self.blocks_transcoded - self.blocks_reused - self.blocks_from_cache;
        let mut line = match &self.reused_from {
            Some(previous) => format!(
                "copied {} of {} blocks from {}",
                self.blocks_reused,
                self.blocks_transcoded,
                previous.display()
            ),
            None => format!("{} blocks", self.blocks_transcoded),
        };
        match &self.block_cache {
            Some(BlockCacheReport {
                unused: Some(why),
                dir,
                ..
            }) => line.push_str(&format!(
                ", compressed {compressed} (the block cache {} was not used: {why})",
                dir.display()
            )),
            Some(cache) => {
                line.push_str(&format!(
                    ", took {} from the block cache {}, compressed {compressed}",
                    cache.hits,
                    cache.dir.display()
                ));
                if cache.writable {
                    line.push_str(&format!(" ({} new entries in the cache)", cache.stored));
                } else {
                    line.push_str(" (the cache is used read-only)");
                }
            }
            None => line.push_str(&format!(", compressed {compressed}")),
        }
        Some(line)
    }
}

mod block_cache;
mod codec;
mod dir;
mod error;
mod format;
mod image;
mod inode;
mod metadata;
mod resolve;
mod reuse;
mod sample;
mod view;
mod writer;
mod xattr;

pub use block_cache::{BlockCacheOptions, BlockCacheReport, DEFAULT_MAX_SIZE};
pub use error::{Corruption, Error};
pub use inode::Kind;
pub use resolve::{Link, LookupError, MAX_SYMLINKS};
pub use reuse::{record_path, RECORD_SUFFIX};
pub use sample::write_sample_image;
pub use view::{Entry, View};

use image::{Content, Image, Node, NodeId};
use inode::{Body, Inode};

/// Injects `injections` into the squashfs image at `input` and writes the result to `output`.
///
/// `output` is written beside its final path and renamed into place only once it is complete
/// and has been read back, so a failure never leaves a partial file under the final name.
/// `progress` is called with (bytes done, bytes total) of the data region as it is processed.
pub fn inject(
    input: &Path,
    output: &Path,
    injections: &[Injection],
    opts: &InjectOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<InjectReport, Error> {
    check_injections(input, injections)?;
    let mut img = Image::open(input)?;
    let mtime = opts.source_date_epoch.unwrap_or(img.sb.mkfs_time);
    let injected = apply(&mut img, input, injections, mtime)?;

    let input_compressor = img.compressor_name().to_string();
    let keep_raw = opts.compression == Compression::Keep || img.sb.compressor_id == codec::XZ;
    let (out_codec, flags) = if keep_raw {
        (img.codec.clone(), img.sb.flags)
    } else {
        let codec = codec::Codec::xz_default(img.sb.block_size);
        let flags =
            img.sb.flags & !(format::flags::ANY_UNCOMPRESSED | format::flags::COMPRESSOR_OPTIONS);
        (codec, flags)
    };
    let plan = writer::Plan {
        codec: out_codec,
        keep_raw,
        flags,
        mkfs_time: mtime,
        jobs: if opts.jobs == 0 {
            default_jobs()
        } else {
            opts.jobs
        },
    };
    log::info!(
        "{}: {} -> {}, block size {} KiB, {} inodes; data region {}",
        input.display(),
        input_compressor,
        plan.codec.name(),
        img.sb.block_size >> 10,
        img.sb.inode_count,
        if keep_raw { "copied raw" } else { "transcoded" }
    );
    let mut reuse = match &opts.reuse {
        Some(previous) if !keep_raw => prepare_reuse(&img, &plan, previous),
        _ => writer::Reuse::default(),
    };
    let mut unused_cache = None;
    if let Some(cache_opts) = &opts.block_cache {
        match open_cache(&img, &plan, keep_raw, cache_opts) {
            Ok(cache) => reuse.cache = Some(cache),
            Err(why) => {
                log::info!(
                    "not using the block cache {}: {why}",
                    cache_opts.dir.display()
                );
                unused_cache = Some(BlockCacheReport {
                    dir: cache_opts.dir.clone(),
                    unused: Some(why),
                    ..Default::default()
                });
            }
        }
    }
    let (written, record) = write_atomically(output, |file, tmp| {
        let written = writer::write(&mut img, &plan, file, tmp, &mut reuse, progress)?;
        verify(tmp, &img, &injected, &written)?;
        let record = match reuse.recorder.take() {
            Some(recorder) => {
                let read_error = |e| Error::io("read the output image", tmp, e);
                let file = std::fs::File::open(tmp).map_err(read_error)?;
                Some(recorder.finish(&file).map_err(read_error)?)
            }
            None => None,
        };
        Ok((written, record))
    })?;
    let output_sha256 = record
        .as_ref()
        .map(|(_, sha, size)| (crate::safe_fs::hex(sha), *size));
    let record = match opts.reuse {
        Some(_) => keep_record(output, record.map(|(bytes, _, _)| bytes))?,
        None => None,
    };
    let block_cache = reuse.cache.take().map(writer_finish_cache).or(unused_cache);
    let report = InjectReport {
        input_compressor,
        output_compressor: plan.codec.name().to_string(),
        data_kept_raw: keep_raw,
        inode_count: img.sb.inode_count,
        bytes_written: written.bytes,
        blocks_transcoded: reuse.transcoded,
        blocks_reused: reuse.copied,
        blocks_from_cache: block_cache.as_ref().map_or(0, |c| c.hits),
        reused_from: opts.reuse.clone().filter(|_| !keep_raw),
        block_cache,
        record,
        output_sha256,
    };
    if let Some(sources) = report.block_sources() {
        log::info!("{sources}");
    }
    Ok(report)
}

/// Writes the record of `output` beside it (atomically, after the output), or, when the data
/// was not transcoded, removes an earlier record there: it would describe another image.
fn keep_record(output: &Path, record: Option<Vec<u8>>) -> Result<Option<PathBuf>, Error> {
    let path = record_path(output);
    let Some(bytes) = record else {
        match std::fs::remove_file(&path) {
            Ok(()) => log::info!("removed {}: this output was not transcoded", path.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove the stale reuse record", path, e)),
        }
        return Ok(None);
    };
    write_atomically(&path, |mut file, tmp| {
        use std::io::Write;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io("write the reuse record", tmp, e))
    })?;
    Ok(Some(path))
}

/// Opens the previous output for reuse, saying in the log what can be reused and, when nothing
/// can, why; a record of this output is kept in any case, if the encoder can be identified.
fn prepare_reuse(img: &Image, plan: &writer::Plan, previous: &Path) -> writer::Reuse {
    let compress = plan.flags & format::flags::UNCOMPRESSED_DATA == 0;
    let Some(settings) = reuse::settings(&img.codec, &plan.codec, img.sb.block_size, compress)
    else {
        log::warn!(
            "not reusing {} and keeping no record: the running executable cannot be read to identify the encoder",
            previous.display()
        );
        return writer::Reuse::default();
    };
    let opened = if previous.exists() {
        reuse::Previous::open(previous, &settings)
    } else {
        Err("it does not exist yet".into())
    };
    let opened = match opened {
        Ok(p) => {
            log::info!(
                "reusing the blocks of {} (its record knows {})",
                previous.display(),
                p.blocks()
            );
            Some(p)
        }
        Err(why) => {
            log::info!(
                "compressing every block: not reusing {}: {why}",
                previous.display()
            );
            None
        }
    };
    writer::Reuse {
        previous: opened,
        recorder: Some(reuse::Recorder::new(settings)),
        ..Default::default()
    }
}

/// Opens the block cache for this output, or says why it is of no use here.
fn open_cache(
    img: &Image,
    plan: &writer::Plan,
    keep_raw: bool,
    opts: &BlockCacheOptions,
) -> Result<block_cache::BlockCache, String> {
    if keep_raw {
        return Err("the data blocks are copied as they are, none is compressed".into());
    }
    if plan.flags & format::flags::UNCOMPRESSED_DATA != 0 {
        return Err("the output stores its data uncompressed".into());
    }
    block_cache::BlockCache::open(opts, &plan.codec, img.sb.block_size)
}

/// Ends the cache's run (its scan, when it stored anything) and logs what it did.
fn writer_finish_cache(cache: block_cache::BlockCache) -> BlockCacheReport {
    let report = cache.finish();
    if report.damaged > 0 {
        log::warn!(
            "block cache {}: {} entries were damaged or not what their names say; their blocks were compressed again{}",
            report.dir.display(),
            report.damaged,
            if report.writable { " and the entries replaced" } else { "" }
        );
    }
    if report.evicted > 0 {
        log::info!(
            "block cache {}: removed the {} least recently used entries, {} MiB left",
            report.dir.display(),
            report.evicted,
            report.size_after_scan.unwrap_or(0) >> 20
        );
    }
    report
}

fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Checks what can be checked before the image is read: destinations are absolute, clean and
/// distinct; sources are readable regular files.
fn check_injections(input: &Path, injections: &[Injection]) -> Result<(), Error> {
    let mut seen = std::collections::HashSet::new();
    for inj in injections {
        let bad = |why: &str| Error::Destination {
            image: input.to_path_buf(),
            dest: inj.dest.clone(),
            why: why.to_string(),
        };
        let parts: Vec<&str> = inj.dest.split('/').skip(1).collect();
        if !inj.dest.starts_with('/') || parts.is_empty() || parts.iter().any(|p| p.is_empty()) {
            return Err(bad(
                "the destination must be an absolute path to a file, like /vxn-init.sh",
            ));
        }
        if parts
            .iter()
            .any(|p| *p == "." || *p == ".." || p.len() > 256 || p.contains('\0'))
        {
            return Err(bad(
                "the destination may not contain \".\", \"..\" or names over 256 bytes",
            ));
        }
        if !seen.insert(inj.dest.as_str()) {
            return Err(bad("the same destination is given twice"));
        }
        if inj.mode > 0o7777 {
            return Err(bad("the mode has bits beyond 07777"));
        }
        let meta = std::fs::metadata(&inj.source)
            .map_err(|e| Error::io("read the file to inject", inj.source.clone(), e))?;
        if !meta.is_file() {
            return Err(Error::io(
                "read the file to inject",
                inj.source.clone(),
                std::io::Error::other("it is not a regular file"),
            ));
        }
    }
    Ok(())
}

/// Applies the injections to the in-memory image, as `install -m MODE` would: a new inode owned
/// by root, replacing any non-directory at the destination. Other hardlinks of a replaced inode
/// keep it (with one link fewer); an inode left with no link is dropped and its number reused.
///
/// DEST's directories are found as `install` into the unpacked tree would follow them, through
/// symlinks (a usrmerged `/sbin -> usr/sbin`), but inside the image: an absolute target starts
/// at the image's root and `..` stops there. DEST itself is not followed: a symlink there is
/// replaced, as `install` unlinks it. Returns each injected file's path, symlinks resolved, with
/// its node.
fn apply(
    img: &mut Image,
    input: &Path,
    injections: &[Injection],
    mtime: u32,
) -> Result<Vec<(String, NodeId)>, Error> {
    let mut injected: Vec<(String, NodeId)> = Vec::new();
    if injections.is_empty() {
        return Ok(injected);
    }
    let root_id = match img.ids.iter().position(|id| *id == 0) {
        Some(i) => i as u16,
        None if img.ids.len() < usize::from(u16::MAX) => {
            img.ids.push(0);
            (img.ids.len() - 1) as u16
        }
        None => {
            return Err(Error::Unsupported {
                path: input.to_path_buf(),
                what: "65535 distinct owners and no root among them".into(),
            })
        }
    };
    let mut freed: Vec<u32> = Vec::new();
    let mut next_number = img.sb.inode_count + 1;
    for inj in injections {
        let bad = |why: String| Error::Destination {
            image: input.to_path_buf(),
            dest: inj.dest.clone(),
            why,
        };
        let (parent_path, name) = inj.dest.rsplit_once('/').unwrap_or(("", &inj.dest));
        let mut links = Vec::new();
        let (parent, resolved_parent) = img
            .resolve(parent_path, true, &mut links)
            .map_err(|e| bad(unresolved_parent(parent_path, &e, &links)))?;
        if img.nodes[parent].inode.kind != Kind::Dir {
            let kind = img.nodes[parent].inode.kind;
            return Err(bad(if links.is_empty() {
                format!("{parent_path:?} is a {kind} in the image, not a directory")
            } else {
                format!(
                    "{parent_path:?} leads through {} to {resolved_parent}, which is a {kind} in the image, not a directory",
                    via(&links)
                )
            }));
        }
        let resolved = match resolved_parent.as_str() {
            "/" => format!("/{name}"),
            dir => format!("{dir}/{name}"),
        };
        if let Some(i) = injected.iter().position(|(at, _)| *at == resolved) {
            return Err(bad(format!(
                "it is the same file in the image as the destination {} (both are {resolved}); give each file once",
                injections[i].dest
            )));
        }
        if !links.is_empty() {
            log::info!(
                "{}: {} goes to {resolved}, through {}",
                input.display(),
                inj.dest,
                via(&links)
            );
        }
        let children = &img.nodes[parent].children;
        let slot = children.binary_search_by(|(n, _)| n.as_slice().cmp(name.as_bytes()));
        let insert_at = match slot {
            Ok(i) => {
                let old = children[i].1;
                if img.nodes[old].inode.kind == Kind::Dir {
                    return Err(bad(
                        "a directory of that name exists in the image; only files can be injected"
                            .into(),
                    ));
                }
                img.nodes[parent].children.remove(i);
                let old = &mut img.nodes[old];
                if old.inode.nlink > 1 {
                    old.inode.nlink -= 1;
                } else {
                    old.dropped = true;
                    freed.push(old.inode.number);
                }
                i
            }
            Err(i) => i,
        };
        let number = freed.pop().unwrap_or_else(|| {
            next_number += 1;
            next_number - 1
        });
        let node = Node {
            inode: Inode {
                kind: Kind::File,
                extended: false,
                mode: inj.mode,
                uid_idx: root_id,
                gid_idx: root_id,
                mtime,
                number,
                nlink: 1,
                xattr: format::NO_XATTR,
                body: Body::File {
                    blocks_start: 0,
                    file_size: 0,
                    sparse: 0,
                    fragment: format::NO_FRAGMENT,
                    frag_offset: 0,
                    blocks: Vec::new(),
                },
            },
            children: Vec::new(),
            content: Content::Host(inj.source.clone()),
            dropped: false,
            origin: None,
        };
        img.nodes.push(node);
        let id = img.nodes.len() - 1;
        img.nodes[parent]
            .children
            .insert(insert_at, (name.as_bytes().to_vec(), id));
        injected.push((resolved, id));
    }
    // mksquashfs numbers the root's ".." one past the last inode; keep that true.
    let old_count = img.sb.inode_count;
    img.sb.inode_count = next_number - 1;
    if let Body::Dir { parent, .. } = &mut img.nodes[img.root].inode.body {
        if *parent == old_count + 1 {
            *parent = img.sb.inode_count + 1;
        }
    }
    Ok(injected)
}

/// Why DEST's parent directory cannot be found, naming the symlinks the lookup followed.
fn unresolved_parent(parent: &str, error: &LookupError, links: &[Link]) -> String {
    match error {
        LookupError::Missing { .. } if links.is_empty() => {
            format!("its parent directory {parent:?} does not exist in the image")
        }
        LookupError::NotADirectory { at, kind } if links.is_empty() => {
            format!("{at:?} is a {kind} in the image, not a directory")
        }
        LookupError::TooManySymlinks => format!(
            "its parent directory {parent:?} cannot be found: it leads through more than {MAX_SYMLINKS} symlinks, a loop ({}); fix the links in the image",
            via(links)
        ),
        LookupError::Missing { at } => format!(
            "its parent directory {parent:?} does not exist in the image: it leads through {} to {at}, which does not exist; fix the link or give DEST's real directory",
            via(links)
        ),
        LookupError::NotADirectory { at, kind } => format!(
            "its parent directory {parent:?} is not a directory in the image: it leads through {} to {at}, which is a {kind}; fix the link or give DEST's real directory",
            via(links)
        ),
    }
}

/// "the symlink /sbin -> usr/sbin", or "the symlinks A -> B, B -> C" (each named once).
fn via(links: &[Link]) -> String {
    let mut named: Vec<String> = Vec::new();
    for link in links {
        let text = link.to_string();
        if !named.contains(&text) {
            named.push(text);
        }
    }
    match named.len() {
        1 => format!("the symlink {}", named[0]),
        _ => format!("the symlinks {}", named.join(", ")),
    }
}

/// Creates `output` through a temporary file in the same directory: `write` fills it, and only
/// when that succeeds is it renamed over `output`. On any error the temporary file is removed.
pub(crate) fn write_atomically<T>(
    output: &Path,
    write: impl FnOnce(std::fs::File, &Path) -> Result<T, Error>,
) -> Result<T, Error> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    if output.is_dir() {
        return Err(Error::io(
            "write the output image",
            output,
            std::io::Error::other("it is a directory"),
        ));
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempfile_in(&dir)
        .map_err(|e| Error::io("create a temporary file in", dir.clone(), e))?;
    let mut perms = tmp
        .as_file()
        .metadata()
        .map_err(|e| Error::io("create a temporary file in", dir.clone(), e))?
        .permissions();
    // Build outputs are world-readable, as `install -m 0644` would leave them; tempfile's
    // private 0600 is for secrets.
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o644);
    tmp.as_file()
        .set_permissions(perms)
        .map_err(|e| Error::io("create a temporary file in", dir.clone(), e))?;
    let file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| Error::io("create a temporary file in", dir.clone(), e))?;
    let tmp_path = tmp.path().to_path_buf();
    let value = write(file, &tmp_path)?;
    crate::safe_fs::rename_into_place(tmp.into_temp_path(), output)
        .map_err(|e| Error::io("rename the finished image to", output, e))?;
    // The rename is durable only once the directory is synced.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(value)
}

/// Reads the written image back with the same checks as any input, and compares each injected
/// file's bytes with what was written.
fn verify(
    tmp: &Path,
    img: &Image,
    injected: &[(String, NodeId)],
    written: &writer::Written,
) -> Result<(), Error> {
    let back = Image::open(tmp)?;
    let fail = |what: String| Error::Corrupt {
        path: tmp.to_path_buf(),
        corruption: Corruption::new("read-back check", 0, what),
    };
    if back.sb.inode_count != img.sb.inode_count {
        return Err(fail(format!(
            "the written image has {} inodes instead of {} (this is a bug in vxn-blobs)",
            back.sb.inode_count, img.sb.inode_count
        )));
    }
    for (dest, id) in injected {
        let at = back
            .lookup(dest)
            .ok_or_else(|| fail(format!("{dest} is missing (this is a bug in vxn-blobs)")))?;
        let digest = back.hash_file(at)?;
        if written.digests.get(id) != Some(&digest)
            || back.nodes[at].inode.mode != img.nodes[*id].inode.mode
        {
            return Err(fail(format!(
                "{dest} does not read back as written (this is a bug in vxn-blobs)"
            )));
        }
    }
    Ok(())
}

/// A file inside an image, as `ls -ln` and `sha256sum` would describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub path: String,
    /// Permission bits (07777).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub size: u64,
    /// Hex sha256 of the contents, for regular files.
    pub sha256: Option<String>,
}

/// Describes `path` inside the image at `image` (for reports such as the demo's).
pub fn stat(image: &Path, path: &str) -> Result<FileInfo, Error> {
    let img = Image::open(image)?;
    let id = img.lookup(path).ok_or_else(|| Error::Destination {
        image: image.to_path_buf(),
        dest: path.to_string(),
        why: "no such path in the image".into(),
    })?;
    let inode = &img.nodes[id].inode;
    let owner = |i: u16| img.ids.get(i as usize).copied().unwrap_or(0);
    let (size, sha256) = match &inode.body {
        Body::File { file_size, .. } => {
            let hex: String = img
                .hash_file(id)?
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (*file_size, Some(hex))
        }
        Body::Symlink { target } => (target.len() as u64, None),
        _ => (0, None),
    };
    Ok(FileInfo {
        path: path.to_string(),
        mode: inode.mode,
        uid: owner(inode.uid_idx),
        gid: owner(inode.gid_idx),
        mtime: inode.mtime,
        size,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// mksquashfs, or `None` on a laptop without it (CI=true makes its absence a failure).
    fn mksquashfs() -> Option<&'static str> {
        let found = Command::new("mksquashfs").arg("-version").output().is_ok();
        if !found && std::env::var("CI").as_deref() == Ok("true") {
            panic!("mksquashfs is required under CI=true (apt-get install squashfs-tools)");
        }
        found.then_some("mksquashfs")
    }

    fn tables(path: &Path) -> (Vec<u8>, Vec<u8>) {
        let img = Image::open(path).expect("image reads");
        let src = metadata::Source::open(path).expect("opens");
        let end = img
            .sb
            .fragment_table
            .min(img.sb.export_table)
            .min(img.sb.id_table);
        let inodes = src
            .read_stream(
                &img.codec,
                "inode table",
                img.sb.inode_table,
                img.sb.directory_table,
            )
            .unwrap();
        let dirs = src
            .read_stream(&img.codec, "directory table", img.sb.directory_table, end)
            .unwrap();
        (inodes.data, dirs.data)
    }

    /// A previous output that changes after its record was checked (edited in place during
    /// the run) is caught block by block: the block is compressed instead, and nothing more is
    /// copied from that image.
    #[test]
    fn a_block_changed_after_the_check_is_compressed_not_copied() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let (input, previous) = (dir.path().join("in.sq"), dir.path().join("prev.sq"));
        write_sample_image(&input, 1).unwrap();
        let opts = InjectOptions {
            reuse: Some(previous.clone()),
            ..Default::default()
        };
        let report = inject(&input, &previous, &[], &opts, &mut |_, _| {}).unwrap();
        assert!(report.blocks_transcoded > 1 && report.record.is_some());

        let img = Image::open(&input).unwrap();
        let out_codec = codec::Codec::xz_default(img.sb.block_size);
        let settings = reuse::settings(&img.codec, &out_codec, img.sb.block_size, true).unwrap();
        let opened = reuse::Previous::open(&previous, &settings).unwrap();
        // The first block of the data region, whichever key it has.
        let src = metadata::Source::open(&input).unwrap();
        let (pos, field) = match &img.nodes[img.lookup("/bin/busybox").unwrap()].inode.body {
            Body::File {
                blocks_start,
                blocks,
                ..
            } => (*blocks_start, blocks[0]),
            _ => unreachable!(),
        };
        let raw = src
            .read_at("data", pos, (field & !format::DATA_UNCOMPRESSED) as usize)
            .unwrap();
        let entry = opened
            .lookup(&reuse::key(field, &raw))
            .expect("the record knows it");
        assert!(opened.read(&entry).is_ok());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&previous)
            .unwrap()
            .write_all_at(b"changed", entry.pos)
            .unwrap();
        assert!(opened
            .read(&entry)
            .unwrap_err()
            .contains("no longer matches"));

        let mut session = writer::Reuse {
            previous: Some(opened),
            ..Default::default()
        };
        let mut compressed = false;
        let packed = session.copy(&entry, || {
            compressed = true;
            Ok(writer::Packed {
                bytes: vec![1, 2, 3],
                field: 3,
                keys: None,
            })
        });
        assert!(compressed && packed.unwrap().bytes == [1, 2, 3]);
        assert!(session.previous.is_none() && session.copied == 0);
    }

    /// Guards the claim that untouched inodes and directories are re-encoded to the same bytes
    /// mksquashfs wrote (order, headers, indexes), for a tree with a directory large enough to
    /// carry an index. The metadata is stored uncompressed (-noI) so that block positions do not
    /// depend on which deflate implementation compressed them.
    #[test]
    fn unchanged_image_keeps_its_metadata_bytes() {
        let Some(mk) = mksquashfs() else { return };
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("big/sub")).unwrap();
        for i in 0..1500 {
            std::fs::write(
                tree.join(format!("big/a-long-file-name-to-fill-blocks-{i:05}")),
                i.to_string(),
            )
            .unwrap();
        }
        std::fs::write(tree.join("big/sub/x"), vec![7u8; 300_000]).unwrap();
        std::os::unix::fs::symlink("big", tree.join("link")).unwrap();
        let input = dir.path().join("in.sq");
        let status = Command::new(mk)
            .args([tree.as_os_str(), input.as_os_str()])
            .args([
                "-noappend",
                "-quiet",
                "-comp",
                "gzip",
                "-noI",
                "-mkfs-time",
                "1000",
                "-all-time",
                "1000",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        let output = dir.path().join("out.sq");
        let opts = InjectOptions {
            compression: Compression::Keep,
            ..Default::default()
        };
        inject(&input, &output, &[], &opts, &mut |_, _| {}).unwrap();
        let (a, b) = (tables(&input), tables(&output));
        let first = a.0.iter().zip(&b.0).position(|(x, y)| x != y);
        assert!(
            a.0 == b.0,
            "inode tables differ: lengths {} {}, first difference at {:?}: {:?} vs {:?}",
            a.0.len(),
            b.0.len(),
            first,
            first.map(|f| &a.0[f.saturating_sub(8)..f + 24]),
            first.map(|f| &b.0[f.saturating_sub(8)..f + 24])
        );
        assert!(a.1 == b.1, "directory tables differ");
    }
}
