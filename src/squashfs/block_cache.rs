//! The block cache: compressed data blocks kept in a directory that builds, builders and
//! machines share, so that a block compressed once is never compressed again anywhere.
//!
//! Reusing the previous output's blocks (`reuse.rs`) needs that output, which rm_work, a fresh
//! TMPDIR or another builder do not have. The cache keys each block by what it encodes instead:
//! the sha256 of its uncompressed bytes, combined with everything else that decides the
//! compressed bytes (the encoder's identity with its library version and options, the block
//! size). So a hit is exactly the bytes a cold run would write, whatever image, builder or build
//! of the tool put it there, and an image compressed from gzip, zstd or lz4 sources alike finds
//! it.
//!
//! Layout: `<dir>/CACHEDIR.TAG` and `<dir>/<hh>/<key>`, the key in 64 hex digits, `hh` its first
//! two. An entry, integers little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `VXNBLOCK` |
//! | 4 | format, 1 |
//! | 32 | the key (the file's own name): a file copied or renamed to another name is not used |
//! | 4 | the block's size field: its length, with the squashfs "stored uncompressed" bit |
//! | 32 | sha256 of the key, the size field and the block's bytes |
//! | N | the block's bytes as they go into the image |
//!
//! Sharing without a lock: an entry is written under a temporary name in its directory and
//! renamed onto its key, so readers see a whole entry or none; two writers of one key write the
//! same bytes. Nothing read is taken as it is: an entry must be a regular file of a sane size,
//! name its own key, have a size field that fits its length and bytes that match its sha256 (a
//! block stored uncompressed must be the very block looked up), or it is a miss that costs a
//! compression (and a writable cache gets the good entry in its place). So damage, a cut-short
//! copy or an entry under another name never reaches an image. A crash may leave a renamed entry
//! whose bytes never reached the disk, which is why entries are not synced: the check catches
//! it. What the checksum cannot tell is an entry written on purpose with the wrong compressed
//! bytes under a key: the cache is trusted as SSTATE_DIR is (whoever can write one can write the
//! other, whose objects hold the blobs themselves), and proving every hit by decoding it would
//! cost more than the hit saves on a builder that still has its previous output. Every file
//! operation is relative to the cache's own directory descriptor and never follows a symlink, so
//! no entry, however planted, leads a read or a write outside it.
//!
//! Bounded: a hit or a reuse touches the entry's mtime, and after a run that stored entries the
//! cache is scanned and the least recently used entries are removed until it is below 90% of its
//! limit. Concurrent scans may remove a little more than needed, never anything but entries and
//! stale temporary files; a reader whose entry vanishes compresses the block again.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, UTIME_NOW};
use sha2::{Digest, Sha256};

use super::codec::Codec;
use super::format::{DATA_UNCOMPRESSED, MAX_BLOCK_SIZE};
use crate::safe_fs::{hex, TEMP_PREFIX};

/// The limit when none is given: about forty 300 MB rootfs images' worth of distinct blocks.
pub const DEFAULT_MAX_SIZE: u64 = 5 << 30;
const MAGIC: &[u8; 8] = b"VXNBLOCK";
const FORMAT: u32 = 1;
const HEADER: usize = 80;
/// The largest entry: a header and the largest block the format allows.
const MAX_ENTRY: u64 = HEADER as u64 + MAX_BLOCK_SIZE as u64;
/// A scan removes entries until the cache is at most this share of its limit, so that the next
/// few runs need not scan again.
const EVICT_TO_PERCENT: u64 = 90;
/// Temporary files older than this are a killed writer's and are removed by a scan.
const STALE_TEMP_SECONDS: i64 = 3600;
/// Entries a scan keeps in memory (48 bytes each, 96 MiB at most): a 5 GiB cache of a 300 MB
/// rootfs's blocks (128 KiB, about 45 KiB compressed) holds about 120,000.
const MAX_LISTED: usize = 2 << 20;
const TAG_NAME: &str = "CACHEDIR.TAG";
const TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by vxn-blobs (its block cache).\n\
# For information about cache directory tags, see https://bford.info/cachedir/\n";

/// Where the block cache is and how it may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockCacheOptions {
    /// The cache directory; created (with its parents) when missing unless read-only.
    pub dir: PathBuf,
    /// Bytes the entries may take before the least recently used are removed.
    pub max_size: u64,
    /// Use the entries but never write, touch or remove anything: a mirror, or a cache owned by
    /// another user.
    pub read_only: bool,
}

impl BlockCacheOptions {
    /// A writable cache at `dir` with the default size limit.
    pub fn new(dir: impl Into<PathBuf>) -> BlockCacheOptions {
        BlockCacheOptions {
            dir: dir.into(),
            max_size: DEFAULT_MAX_SIZE,
            read_only: false,
        }
    }
}

/// What the block cache did during one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockCacheReport {
    pub dir: PathBuf,
    /// Why the cache was not used at all, when it was not.
    pub unused: Option<String>,
    /// Whether the run wrote to it (false for a read-only cache, or one that refused writes).
    pub writable: bool,
    /// Blocks taken from the cache.
    pub hits: u64,
    /// Blocks looked up and not there.
    pub misses: u64,
    /// Entries there but refused (damaged, truncated, not a file, another key): each cost a
    /// compression.
    pub damaged: u64,
    /// Entries this run added.
    pub stored: u64,
    /// Entries removed by this run's scan, and the bytes of the entries left after it.
    pub evicted: u64,
    pub size_after_scan: Option<u64>,
    /// Why writing stopped, when it did.
    pub write_error: Option<String>,
}

/// The key of a block's content: its uncompressed bytes' sha256.
pub(crate) fn content_digest(plain: &[u8]) -> [u8; 32] {
    Sha256::digest(plain).into()
}

/// An open block cache for one run's output codec and block size.
pub(crate) struct BlockCache {
    dir: PathBuf,
    root: OwnedFd,
    /// sha256 state over everything besides the content that decides the bytes.
    keyer: Sha256,
    max_size: u64,
    writable: AtomicBool,
    write_error: Mutex<Option<String>>,
    hits: AtomicU64,
    misses: AtomicU64,
    damaged: AtomicU64,
    stored: AtomicU64,
}

/// Why an entry was not used; only counted and logged at debug level, since each costs no more
/// than the compression a cache-less run does anyway.
enum Refused {
    Absent,
    Damaged(String),
}

impl BlockCache {
    /// Opens (or creates) the cache for blocks compressed with `codec` at `block_size`. `Err`
    /// says why it cannot be used; the run goes on without it.
    pub fn open(opts: &BlockCacheOptions, codec: &Codec, block_size: u32) -> Result<Self, String> {
        let identity = codec.encoder_identity().ok_or_else(|| {
            format!(
                "blocks compressed with {} are not cached (its encoder's version cannot be named)",
                codec.name()
            )
        })?;
        if !opts.read_only {
            std::fs::create_dir_all(&opts.dir)
                .map_err(|e| format!("it cannot be created ({e})"))?;
        }
        let root = rustix::fs::open(
            &opts.dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            format!(
                "it cannot be opened as a directory ({})",
                io::Error::from(e)
            )
        })?;
        let settings = format!(
            "vxn-blobs block cache {FORMAT}; {identity}; block size {block_size}; stored uncompressed when not smaller"
        );
        let mut keyer = Sha256::new();
        keyer.update((settings.len() as u64).to_le_bytes());
        keyer.update(settings.as_bytes());
        let cache = BlockCache {
            dir: opts.dir.clone(),
            root,
            keyer,
            max_size: opts.max_size,
            writable: AtomicBool::new(!opts.read_only),
            write_error: Mutex::new(None),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            damaged: AtomicU64::new(0),
            stored: AtomicU64::new(0),
        };
        if !opts.read_only {
            cache.write_tag();
        }
        Ok(cache)
    }

    fn key(&self, content: &[u8; 32]) -> [u8; 32] {
        let mut h = self.keyer.clone();
        h.update(content);
        h.finalize().into()
    }

    /// The output bytes and size field of the block whose uncompressed bytes are `plain` (with
    /// digest `content`), if the cache has a good entry for it.
    pub fn get(&self, content: &[u8; 32], plain: &[u8]) -> Option<(Vec<u8>, u32)> {
        let key = self.key(content);
        match self.read_entry(&key, plain) {
            Ok(found) => {
                self.hits.fetch_add(1, Ordering::Relaxed);
                Some(found)
            }
            Err(Refused::Absent) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(Refused::Damaged(why)) => {
                log::debug!(
                    "block cache entry {}: {why}",
                    self.entry_path(&key).display()
                );
                self.damaged.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn read_entry(&self, key: &[u8; 32], plain: &[u8]) -> Result<(Vec<u8>, u32), Refused> {
        let name = hex(key);
        let sub = match self.subdir(&name, false) {
            Ok(sub) => sub,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Refused::Absent),
            Err(e) => return Err(Refused::Damaged(format!("its directory: {e}"))),
        };
        let fd = match open_entry(&sub, &name) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Err(Refused::Absent),
            Err(e) => return Err(Refused::Damaged(format!("cannot be opened ({e})"))),
        };
        let stat = rustix::fs::fstat(&fd).map_err(|e| Refused::Damaged(e.to_string()))?;
        let size = stat.st_size as u64;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(Refused::Damaged("not a regular file".into()));
        }
        if !(HEADER as u64 + 1..=MAX_ENTRY).contains(&size) {
            return Err(Refused::Damaged(format!("{size} bytes, no entry's size")));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        std::fs::File::from(
            fd.try_clone()
                .map_err(|e| Refused::Damaged(e.to_string()))?,
        )
        .take(MAX_ENTRY + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Refused::Damaged(format!("cannot be read ({e})")))?;
        let (field, payload) = parse_entry(&bytes, key).map_err(Refused::Damaged)?;
        if field & DATA_UNCOMPRESSED != 0 && payload != plain {
            return Err(Refused::Damaged(
                "it stores other bytes than the block its key names".into(),
            ));
        }
        self.touch(&fd);
        Ok((payload.to_vec(), field))
    }

    /// Marks the entry for `content` as used, if there is one; false when there is none.
    pub fn refresh(&self, content: &[u8; 32]) -> bool {
        let name = hex(&self.key(content));
        let Ok(sub) = self.subdir(&name, false) else {
            return false;
        };
        match open_entry(&sub, &name) {
            Ok(fd) => {
                let regular = rustix::fs::fstat(&fd).is_ok_and(|s| {
                    rustix::fs::FileType::from_raw_mode(s.st_mode)
                        == rustix::fs::FileType::RegularFile
                });
                if regular {
                    self.touch(&fd);
                }
                regular
            }
            Err(_) => false,
        }
    }

    /// Adds the block (its output bytes and size field) under `content`, unless the cache is
    /// not written. A failure that will repeat (no permission, no space, a read-only file
    /// system) stops writing for the rest of the run, with one warning; any other costs only
    /// this entry.
    pub fn put(&self, content: &[u8; 32], bytes: &[u8], field: u32) {
        if !self.writable.load(Ordering::Relaxed) {
            return;
        }
        let key = self.key(content);
        let name = hex(&key);
        let mut entry = Vec::with_capacity(HEADER + bytes.len());
        entry.extend_from_slice(MAGIC);
        entry.extend_from_slice(&FORMAT.to_le_bytes());
        entry.extend_from_slice(&key);
        entry.extend_from_slice(&field.to_le_bytes());
        entry.extend_from_slice(&entry_sum(&key, field, bytes));
        entry.extend_from_slice(bytes);
        let result = match self.subdir(&name, true) {
            Ok(sub) => write_renamed(&sub, &name, &entry),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                self.stored.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if lasting(&e) => self.stop_writing(format!(
                "cannot write {} ({e})",
                self.entry_path(&key).display()
            )),
            Err(e) => log::debug!(
                "block cache: not keeping {} ({e})",
                self.entry_path(&key).display()
            ),
        }
    }

    fn stop_writing(&self, why: String) {
        if self.writable.swap(false, Ordering::Relaxed) {
            log::warn!(
                "block cache {}: {why}; using it read-only for the rest of this run",
                self.dir.display()
            );
            if let Ok(mut slot) = self.write_error.lock() {
                *slot = Some(why);
            }
        }
    }

    /// Sets an entry's mtime to now, which is what eviction orders by. Best effort: another
    /// user's entry in a cache without group write cannot be touched, and then ages as if unused.
    fn touch(&self, fd: &OwnedFd) {
        if !self.writable.load(Ordering::Relaxed) {
            return;
        }
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        };
        let _ = rustix::fs::futimens(
            fd,
            &Timestamps {
                last_access: now,
                last_modification: now,
            },
        );
    }

    /// The fan-out directory of an entry name, opened without following a symlink (something
    /// else planted there is an error, never a way out of the cache); created first when
    /// `create`.
    fn subdir(&self, name: &str, create: bool) -> io::Result<OwnedFd> {
        let sub = &name[..2];
        if create {
            match rustix::fs::mkdirat(&self.root, sub, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        open_subdir(&self.root, sub)
    }

    fn entry_path(&self, key: &[u8; 32]) -> PathBuf {
        let name = hex(key);
        self.dir.join(&name[..2]).join(name)
    }

    fn write_tag(&self) {
        if rustix::fs::statat(&self.root, TAG_NAME, AtFlags::SYMLINK_NOFOLLOW).is_err() {
            if let Err(e) = write_renamed(&self.root, TAG_NAME, TAG.as_bytes()) {
                self.stop_writing(format!("cannot write {TAG_NAME} ({e})"));
            }
        }
    }

    /// Ends the run: scans and trims the cache when this run stored anything, and reports.
    pub fn finish(self) -> BlockCacheReport {
        let mut report = BlockCacheReport {
            dir: self.dir.clone(),
            writable: self.writable.load(Ordering::Relaxed),
            hits: self.hits.into_inner(),
            misses: self.misses.into_inner(),
            damaged: self.damaged.into_inner(),
            stored: self.stored.into_inner(),
            write_error: self.write_error.into_inner().ok().flatten(),
            ..Default::default()
        };
        if report.writable && report.stored > 0 {
            match trim(&self.root, self.max_size) {
                Ok((evicted, size)) => {
                    report.evicted = evicted;
                    report.size_after_scan = Some(size);
                }
                Err(e) => log::warn!("block cache {}: the scan failed ({e})", self.dir.display()),
            }
        }
        report
    }
}

/// An entry, opened for reading without following a symlink, and without blocking on a fifo.
fn open_entry(dir: &OwnedFd, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// A directory in the cache, opened without following a symlink.
fn open_subdir(root: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        root,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Whether a failed write will fail the same way for every other entry of this run.
fn lasting(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::EPERM | libc::EROFS | libc::ENOSPC | libc::EDQUOT)
    )
}

/// The size field and bytes of an entry, if it is a well-formed entry of `key`.
fn parse_entry<'a>(bytes: &'a [u8], key: &[u8; 32]) -> Result<(u32, &'a [u8]), String> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err("not a vxn-blobs block cache entry".into());
    }
    if bytes[8..12] != FORMAT.to_le_bytes() {
        return Err("an entry of another format".into());
    }
    if &bytes[12..44] != key {
        return Err("the entry of another key".into());
    }
    let field = u32::from_le_bytes([bytes[44], bytes[45], bytes[46], bytes[47]]);
    let len = field & !DATA_UNCOMPRESSED;
    if field & !(DATA_UNCOMPRESSED | (DATA_UNCOMPRESSED - 1)) != 0
        || len == 0
        || len > MAX_BLOCK_SIZE
        || bytes.len() - HEADER != len as usize
    {
        return Err(format!(
            "its size field {field:#x} does not match its {} bytes",
            bytes.len() - HEADER
        ));
    }
    let payload = &bytes[HEADER..];
    if bytes[48..80] != entry_sum(key, field, payload) {
        return Err("its bytes do not match their sha256 (damaged)".into());
    }
    Ok((field, payload))
}

/// The checksum an entry carries: over its key, size field and bytes.
fn entry_sum(key: &[u8; 32], field: u32, payload: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key);
    h.update(field.to_le_bytes());
    h.update(payload);
    h.finalize().into()
}

/// Writes `bytes` to `name` in `dir` through a temporary file renamed onto it.
fn write_renamed(dir: &OwnedFd, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut attempt = 0;
    let (temp, fd) = loop {
        let temp = temp_name();
        match rustix::fs::openat(
            dir,
            temp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o666),
        ) {
            Ok(fd) => break (temp, fd),
            // Another writer's name, however unlikely: take another.
            Err(rustix::io::Errno::EXIST) if attempt < 3 => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let written = std::fs::File::from(fd).write_all(bytes);
    let renamed = written.and_then(|()| Ok(rustix::fs::renameat(dir, temp.as_str(), dir, name)?));
    if renamed.is_err() {
        let _ = rustix::fs::unlinkat(dir, temp.as_str(), AtFlags::empty());
    }
    renamed
}

/// A temporary name no other writer uses, on this machine or another sharing the directory
/// (process ids repeat across machines, hence the host name).
fn temp_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static HOST: OnceLock<String> = OnceLock::new();
    let host = HOST
        .get_or_init(|| std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut h = Sha256::new();
    h.update(host.as_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(nanos.to_le_bytes());
    format!("{TEMP_PREFIX}{}", &hex(&h.finalize())[..24])
}

/// Removes stale temporary files and, when the entries take more than `max_size`, the least
/// recently used ones until they take at most [`EVICT_TO_PERCENT`] of it. Returns the entries
/// removed and the bytes left.
///
/// The listing is streamed and each entry kept as 48 bytes, at most [`MAX_LISTED`] of them, so a
/// cache stuffed with files cannot make the scan allocate without bound; beyond that many the
/// scan trims among those it listed.
fn trim(root: &OwnedFd, max_size: u64) -> io::Result<(u64, u64)> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // (mtime, size, key): the fan-out directory is the key's first byte.
    let mut entries: Vec<(i64, u64, [u8; 32])> = Vec::new();
    let mut total = 0u64;
    for first in 0..=255u8 {
        let sub = hex(&[first]);
        let Ok(dir) = open_subdir(root, &sub) else {
            continue;
        };
        for entry in rustix::fs::Dir::read_from(&dir)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            let key = parse_key(name).filter(|k| k[0] == first);
            let temp = name.starts_with(TEMP_PREFIX);
            if key.is_none() && !temp {
                continue;
            }
            let Ok(stat) = rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            if rustix::fs::FileType::from_raw_mode(stat.st_mode)
                != rustix::fs::FileType::RegularFile
            {
                continue;
            }
            match key {
                Some(key) if entries.len() < MAX_LISTED => {
                    total += stat.st_size as u64;
                    entries.push((stat.st_mtime, stat.st_size as u64, key));
                }
                Some(_) => total += stat.st_size as u64,
                None if now - stat.st_mtime > STALE_TEMP_SECONDS => {
                    let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
                }
                None => {}
            }
        }
    }
    if total <= max_size {
        return Ok((0, total));
    }
    let target = max_size / 100 * EVICT_TO_PERCENT;
    entries.sort_unstable();
    let mut evicted = 0;
    for (_, size, key) in entries {
        if total <= target {
            break;
        }
        let name = hex(&key);
        let Ok(dir) = open_subdir(root, &name[..2]) else {
            continue;
        };
        match rustix::fs::unlinkat(&dir, name.as_str(), AtFlags::empty()) {
            // Gone already: a concurrent scan took it, and it no longer counts either way.
            Ok(()) | Err(rustix::io::Errno::NOENT) => {
                total = total.saturating_sub(size);
                evicted += 1;
            }
            Err(_) => {}
        }
    }
    Ok((evicted, total))
}

/// The key an entry's file name spells: 64 lowercase hex digits.
fn parse_key(name: &str) -> Option<[u8; 32]> {
    if name.len() != 64 {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, pair) in name.as_bytes().chunks_exact(2).enumerate() {
        let digit = |b: u8| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            _ => None,
        };
        key[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, MetadataExt};

    const BLOCK: u32 = 131_072;

    fn codec() -> Codec {
        Codec::xz_default(BLOCK)
    }

    /// A compressible block and its output bytes.
    fn block(seed: u8) -> (Vec<u8>, Vec<u8>, u32) {
        let plain: Vec<u8> = (0..BLOCK).map(|i| ((i / 7) as u8) ^ seed).collect();
        let bytes = codec().compress(&plain).unwrap();
        let field = bytes.len() as u32;
        (plain, bytes, field)
    }

    fn open(dir: &std::path::Path, read_only: bool) -> BlockCache {
        let opts = BlockCacheOptions {
            dir: dir.to_path_buf(),
            max_size: DEFAULT_MAX_SIZE,
            read_only,
        };
        BlockCache::open(&opts, &codec(), BLOCK).unwrap()
    }

    fn entry_file(cache: &BlockCache, plain: &[u8]) -> PathBuf {
        cache.entry_path(&cache.key(&content_digest(plain)))
    }

    #[test]
    fn a_stored_block_is_found_by_its_content_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), false);
        let (plain, bytes, field) = block(1);
        let content = content_digest(&plain);
        assert_eq!(cache.get(&content, &plain), None);
        cache.put(&content, &bytes, field);
        assert_eq!(cache.get(&content, &plain), Some((bytes.clone(), field)));
        assert!(dir.path().join(TAG_NAME).is_file());
        // Another block size is another encoder setting: no hit, though the bytes are the same.
        let other = BlockCache::open(
            &BlockCacheOptions::new(dir.path()),
            &Codec::xz_default(BLOCK / 2),
            BLOCK / 2,
        )
        .unwrap();
        assert_eq!(other.get(&content, &plain), None);
        let report = cache.finish();
        assert_eq!((report.hits, report.misses, report.stored), (1, 1, 1));
    }

    #[test]
    fn damaged_entries_are_misses_and_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), false);
        let (plain, bytes, field) = block(2);
        let content = content_digest(&plain);
        cache.put(&content, &bytes, field);
        let path = entry_file(&cache, &plain);
        let good = std::fs::read(&path).unwrap();
        let damages: Vec<(&str, Vec<u8>)> = vec![
            ("a flipped payload byte", {
                let mut b = good.clone();
                b[HEADER + 40] ^= 0x04;
                b
            }),
            ("cut short", good[..good.len() - 9].to_vec()),
            ("a longer tail", [good.as_slice(), b"xx"].concat()),
            ("another key", {
                let mut b = good.clone();
                b[20] ^= 1;
                b
            }),
            ("a size field that lies", {
                let mut b = good.clone();
                b[44] ^= 1;
                b
            }),
            ("garbage", vec![0x5a; 4000]),
            ("empty", Vec::new()),
        ];
        for (what, damaged) in damages {
            std::fs::write(&path, &damaged).unwrap();
            assert_eq!(cache.get(&content, &plain), None, "{what}");
            cache.put(&content, &bytes, field);
            assert_eq!(std::fs::read(&path).unwrap(), good, "{what}: not replaced");
        }
        // Stored uncompressed, but not the block's bytes.
        let raw_field = BLOCK | DATA_UNCOMPRESSED;
        let mut wrong = plain.clone();
        wrong[0] ^= 1;
        cache.put(&content, &wrong, raw_field);
        assert_eq!(cache.get(&content, &plain), None);
        assert_eq!(cache.finish().damaged, 8);
    }

    #[test]
    fn every_damaged_byte_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), false);
        let (plain, bytes, field) = block(6);
        let content = content_digest(&plain);
        cache.put(&content, &bytes, field);
        let path = entry_file(&cache, &plain);
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut damaged = good.clone();
            damaged[i] ^= 0x01;
            std::fs::write(&path, &damaged).unwrap();
            assert_eq!(
                cache.get(&content, &plain),
                None,
                "byte {i} flipped went unnoticed"
            );
        }
        for len in 0..good.len() {
            std::fs::write(&path, &good[..len]).unwrap();
            assert_eq!(cache.get(&content, &plain), None, "cut at {len}");
        }
    }

    #[test]
    fn planted_files_lead_nowhere_outside_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), false);
        let (plain, bytes, field) = block(3);
        let content = content_digest(&plain);
        let path = entry_file(&cache, &plain);
        let name = path.file_name().unwrap().to_owned();

        // A good entry elsewhere, linked in: not followed.
        cache.put(&content, &bytes, field);
        std::fs::rename(&path, outside.path().join("good")).unwrap();
        symlink(outside.path().join("good"), &path).unwrap();
        assert_eq!(cache.get(&content, &plain), None);
        // Writing replaces the link, never the file it points at.
        let before = std::fs::read(outside.path().join("good")).unwrap();
        cache.put(&content, &bytes, field);
        assert!(!std::fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(std::fs::read(outside.path().join("good")).unwrap(), before);

        // A fifo: refused without blocking.
        std::fs::remove_file(&path).unwrap();
        rustix::fs::mkfifoat(rustix::fs::CWD, &path, Mode::from_raw_mode(0o644)).unwrap();
        assert_eq!(cache.get(&content, &plain), None);
        std::fs::remove_file(&path).unwrap();

        // A huge (sparse) file: refused by its size, never read.
        let huge = std::fs::File::create(&path).unwrap();
        huge.set_len(8 << 30).unwrap();
        assert_eq!(cache.get(&content, &plain), None);
        std::fs::remove_file(&path).unwrap();

        // The fan-out directory itself a symlink out: neither read nor written through.
        let sub = path.parent().unwrap();
        std::fs::remove_dir_all(sub).unwrap();
        symlink(outside.path(), sub).unwrap();
        std::fs::write(
            outside.path().join(&name),
            std::fs::read(outside.path().join("good")).unwrap(),
        )
        .unwrap();
        assert_eq!(cache.get(&content, &plain), None);
        cache.put(&content, &bytes, field);
        let listed: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
        assert_eq!(listed.len(), 2, "something was written outside the cache");
        let report = cache.finish();
        assert_eq!(
            report.write_error, None,
            "one planted link stopped all writing"
        );
        assert_eq!(report.damaged, 4);
    }

    #[test]
    fn a_read_only_cache_is_read_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, bytes, field) = block(4);
        let content = content_digest(&plain);
        open(dir.path(), false).put(&content, &bytes, field);
        let cache = open(dir.path(), true);
        let path = entry_file(&cache, &plain);
        let old = filetime(&path, 1_000_000);
        assert_eq!(cache.get(&content, &plain), Some((bytes.clone(), field)));
        assert_eq!(std::fs::metadata(&path).unwrap().mtime(), old, "touched");
        let (other, other_bytes, other_field) = block(5);
        cache.put(&content_digest(&other), &other_bytes, other_field);
        assert!(!entry_file(&cache, &other).exists());
        let report = cache.finish();
        assert!(!report.writable);
        assert_eq!((report.hits, report.stored), (1, 0));
    }

    /// Sets a file's mtime to `seconds`, returning it.
    fn filetime(path: &std::path::Path, seconds: i64) -> i64 {
        let at = Timespec {
            tv_sec: seconds,
            tv_nsec: 0,
        };
        rustix::fs::utimensat(
            rustix::fs::CWD,
            path,
            &Timestamps {
                last_access: at,
                last_modification: at,
            },
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        seconds
    }

    #[test]
    fn the_least_recently_used_entries_go_first_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let cache = open(dir.path(), false);
        let mut entries = Vec::new();
        for seed in 0..10u8 {
            let (plain, bytes, field) = block(seed + 10);
            cache.put(&content_digest(&plain), &bytes, field);
            let path = entry_file(&cache, &plain);
            filetime(&path, 1_000_000 + i64::from(seed) * 100);
            entries.push((plain, path));
        }
        // A hit makes the oldest the newest.
        assert!(cache
            .get(&content_digest(&entries[0].0), &entries[0].0)
            .is_some());
        let each = std::fs::metadata(&entries[0].1).unwrap().len();
        let sub = entries[0].1.parent().unwrap().to_path_buf();
        std::fs::write(sub.join("README"), "not an entry").unwrap();
        std::fs::write(sub.join(format!("{TEMP_PREFIX}stale")), "killed writer").unwrap();
        filetime(&sub.join(format!("{TEMP_PREFIX}stale")), 1_000_000);
        std::fs::write(sub.join(format!("{TEMP_PREFIX}live")), "a writer at work").unwrap();

        // Room for about 6 entries: down to 90% of it, so 5 stay.
        let (evicted, left) = trim(&cache.root, each * 6 + each / 2).unwrap();
        assert_eq!((evicted, left), (5, each * 5));
        let kept: Vec<bool> = entries.iter().map(|(_, p)| p.exists()).collect();
        assert_eq!(
            kept,
            [true, false, false, false, false, false, true, true, true, true]
        );
        assert!(sub.join("README").exists());
        assert!(!sub.join(format!("{TEMP_PREFIX}stale")).exists());
        assert!(sub.join(format!("{TEMP_PREFIX}live")).exists());
        // Under the limit, nothing goes.
        assert_eq!(trim(&cache.root, each * 6).unwrap(), (0, each * 5));
    }

    #[test]
    fn only_xz_blocks_are_cached() {
        let dir = tempfile::tempdir().unwrap();
        let Err(why) = BlockCache::open(
            &BlockCacheOptions::new(dir.path()),
            &Codec::gzip_default(),
            BLOCK,
        ) else {
            panic!("a gzip cache was opened");
        };
        assert!(why.contains("gzip"), "{why}");
    }
}
