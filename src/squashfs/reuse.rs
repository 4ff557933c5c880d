//! Reusing the xz blocks of a previous output: the record written beside an output, saying which
//! source block became which output bytes, and its use by the next run.
//!
//! A transcoded block is a pure function of the source block's stored bytes, the source and
//! output codecs, the block size and the encoder (this very executable): decompressing it and
//! compressing it again gives the same bytes every time. When a rootfs is rebuilt after one
//! package changed, mksquashfs writes every block of the unchanged files byte for byte as before,
//! so their output bytes can be copied from the previous output instead of being compressed
//! again, and the output is exactly what a run from scratch writes. The record pins everything
//! that function depends on besides the source bytes. A record made under other settings or by
//! another executable, or one beside an image that no longer hashes to what it recorded, is not
//! used; each block copied is checked against its own recorded sha256 first.
//!
//! The record (`<output>.vxn-reuse`), all integers little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `VXNREUSE` |
//! | 4 | format, 2 |
//! | 4 | length S of the settings, at most 4096 |
//! | S | settings: executable, codecs, block size (UTF-8) |
//! | 8 | size of the image described |
//! | 32 | sha256 of the image described |
//! | 8 | number of entries N |
//! | 108 N | entries sorted by key, no two alike: key (32), output position (8), size field (4), sha256 of the output bytes (32), sha256 of the uncompressed bytes (32) |
//! | 32 | sha256 of everything before |
//!
//! A key is the sha256 of a source block's stored bytes, preceded by one byte saying whether
//! the block is stored uncompressed. The sha256 of the uncompressed bytes is what the block
//! cache (`block_cache.rs`) keys the block by: with it, a block copied from the previous output
//! is found in the cache without being decompressed.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::codec::Codec;
use super::format::{DATA_UNCOMPRESSED, MAX_BLOCK_SIZE};
use crate::safe_fs::open_regular;

/// Appended to an output's path to name its record.
pub const RECORD_SUFFIX: &str = ".vxn-reuse";
const MAGIC: &[u8; 8] = b"VXNREUSE";
const FORMAT: u32 = 2;
const MAX_SETTINGS: usize = 4096;
const ENTRY_SIZE: usize = 108;
/// Far above what any real image needs (a 10 GB rootfs at 128 KiB blocks has under 100,000
/// blocks, 7.6 MB of entries); a larger file is not one of ours and is not read into memory.
const MAX_RECORD_BYTES: u64 = 64 << 20;

/// The record of the output at `image`.
pub fn record_path(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(RECORD_SUFFIX);
    PathBuf::from(name)
}

/// The key of a source block from its size field and stored bytes.
pub(crate) fn key(field: u32, raw: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([u8::from(field & DATA_UNCOMPRESSED != 0)]);
    h.update(raw);
    h.finalize().into()
}

/// Everything a transcoded block's bytes depend on besides its source bytes; `None` when the
/// running executable cannot be identified, which rules reuse out (another build of the encoder
/// might compress differently).
pub(crate) fn settings(
    source: &Codec,
    output: &Codec,
    block_size: u32,
    compress: bool,
) -> Option<String> {
    let exe = crate::identity::executable_digest()?;
    Some(format!(
        "vxn-blobs {} executable sha256 {exe}; source {source:?}; output {output:?}; block size {block_size}; compress {compress}",
        env!("CARGO_PKG_VERSION")
    ))
}

/// One transcoded block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub key: [u8; 32],
    /// Where its bytes start in the output, and their size field (with the uncompressed flag).
    pub pos: u64,
    pub field: u32,
    pub sha256: [u8; 32],
    /// sha256 of the block's uncompressed bytes.
    pub content: [u8; 32],
}

impl Entry {
    fn len(&self) -> u64 {
        u64::from(self.field & !DATA_UNCOMPRESSED)
    }
}

/// A record in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    settings: String,
    image_size: u64,
    image_sha256: [u8; 32],
    /// Sorted by key, unique.
    entries: Vec<Entry>,
}

impl Record {
    fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(100 + self.settings.len() + self.entries.len() * ENTRY_SIZE);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&FORMAT.to_le_bytes());
        b.extend_from_slice(&(self.settings.len() as u32).to_le_bytes());
        b.extend_from_slice(self.settings.as_bytes());
        b.extend_from_slice(&self.image_size.to_le_bytes());
        b.extend_from_slice(&self.image_sha256);
        b.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for e in &self.entries {
            b.extend_from_slice(&e.key);
            b.extend_from_slice(&e.pos.to_le_bytes());
            b.extend_from_slice(&e.field.to_le_bytes());
            b.extend_from_slice(&e.sha256);
            b.extend_from_slice(&e.content);
        }
        let sum = Sha256::digest(&b);
        b.extend_from_slice(&sum);
        b
    }

    /// Parses and checks a record; the error says why it cannot be used.
    fn parse(b: &[u8]) -> Result<Record, String> {
        let damaged = |what: &str| format!("it is damaged ({what})");
        let body_len = b
            .len()
            .checked_sub(32)
            .ok_or_else(|| damaged("too short"))?;
        if Sha256::digest(&b[..body_len]).as_slice() != &b[body_len..] {
            return Err(damaged("its checksum does not match"));
        }
        let mut at = 0usize;
        let mut take = |n: usize| -> Result<&[u8], String> {
            let piece = b[..body_len]
                .get(at..at + n)
                .ok_or_else(|| damaged("it ends early"))?;
            at += n;
            Ok(piece)
        };
        if take(8)? != MAGIC {
            return Err("it is not a vxn-blobs reuse record".into());
        }
        let format = u32_of(take(4)?);
        if format != FORMAT {
            return Err(format!("it has format {format}, not {FORMAT}"));
        }
        let settings_len = u32_of(take(4)?) as usize;
        if settings_len > MAX_SETTINGS {
            return Err(damaged("its settings are too long"));
        }
        let settings = String::from_utf8(take(settings_len)?.to_vec())
            .map_err(|_| damaged("its settings are not text"))?;
        let image_size = u64_of(take(8)?);
        let image_sha256: [u8; 32] = take(32)?.try_into().unwrap_or([0; 32]);
        let count = u64_of(take(8)?);
        if count.checked_mul(ENTRY_SIZE as u64) != Some((body_len - at) as u64) {
            return Err(damaged("its entry count does not match its length"));
        }
        let mut entries: Vec<Entry> = Vec::with_capacity(count as usize);
        for raw in b[at..body_len].chunks_exact(ENTRY_SIZE) {
            let e = Entry {
                key: raw[..32].try_into().unwrap_or([0; 32]),
                pos: u64_of(&raw[32..40]),
                field: u32_of(&raw[40..44]),
                sha256: raw[44..76].try_into().unwrap_or([0; 32]),
                content: raw[76..].try_into().unwrap_or([0; 32]),
            };
            let fits = e.len() > 0
                && e.len() <= u64::from(MAX_BLOCK_SIZE)
                && e.field & !(DATA_UNCOMPRESSED | (DATA_UNCOMPRESSED - 1)) == 0
                && e.pos
                    .checked_add(e.len())
                    .is_some_and(|end| end <= image_size);
            if !fits {
                return Err(damaged("an entry lies outside the image"));
            }
            if entries.last().is_some_and(|last| last.key >= e.key) {
                return Err(damaged("its entries are not sorted"));
            }
            entries.push(e);
        }
        Ok(Record {
            settings,
            image_size,
            image_sha256,
            entries,
        })
    }

    /// Reads the record at `path`; the error says why there is none to use.
    fn read(path: &Path) -> Result<Record, String> {
        let file = open_regular(path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => format!("there is no record {}", path.display()),
            _ => format!("its record {} cannot be opened ({e})", path.display()),
        })?;
        let mut bytes = Vec::new();
        file.take(MAX_RECORD_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("its record {} cannot be read ({e})", path.display()))?;
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(format!(
                "its record {} is larger than {} MiB, which no record of ours is",
                path.display(),
                MAX_RECORD_BYTES >> 20
            ));
        }
        Record::parse(&bytes).map_err(|why| format!("its record {}: {why}", path.display()))
    }
}

fn u32_of(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn u64_of(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// A previous output whose record fits this run, open for copying verified blocks.
pub(crate) struct Previous {
    path: PathBuf,
    file: File,
    entries: Vec<Entry>,
}

impl Previous {
    /// Opens the previous output `image` and its record for a run with `settings`. `Err` says,
    /// in words, why nothing of it can be reused: no record, a damaged one, other settings, or
    /// an image that is not the one recorded (hashed whole, so a truncated or edited image is
    /// never trusted).
    pub fn open(image: &Path, settings: &str) -> Result<Previous, String> {
        let record = Record::read(&record_path(image))?;
        if record.settings != settings {
            return Err(format!(
                "its record was made with other settings ({}; now {settings})",
                record.settings
            ));
        }
        let file = open_regular(image).map_err(|e| format!("it cannot be opened ({e})"))?;
        let (sha, size) = hash_file(&file).map_err(|e| format!("it cannot be read ({e})"))?;
        if size != record.image_size || sha != record.image_sha256 {
            return Err(
                "it is not the image its record describes (changed, truncated or replaced since)"
                    .into(),
            );
        }
        Ok(Previous {
            path: image.to_path_buf(),
            file,
            entries: record.entries,
        })
    }

    pub fn blocks(&self) -> usize {
        self.entries.len()
    }

    pub fn lookup(&self, key: &[u8; 32]) -> Option<Entry> {
        self.entries
            .binary_search_by(|e| e.key.cmp(key))
            .ok()
            .map(|i| self.entries[i])
    }

    /// The output bytes of `entry`, read from the previous image; `Err` (with the reason) when
    /// they are not what was recorded, which can only mean the image changed during this run.
    pub fn read(&self, entry: &Entry) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; entry.len() as usize];
        self.file.read_exact_at(&mut buf, entry.pos).map_err(|e| {
            format!(
                "reading {} at {} failed ({e})",
                self.path.display(),
                entry.pos
            )
        })?;
        if <[u8; 32]>::from(Sha256::digest(&buf)) != entry.sha256 {
            return Err(format!(
                "the block at {} of {} no longer matches its record",
                entry.pos,
                self.path.display()
            ));
        }
        Ok(buf)
    }
}

/// Collects the entries of the output being written.
pub(crate) struct Recorder {
    settings: String,
    entries: Vec<Entry>,
}

impl Recorder {
    pub fn new(settings: String) -> Recorder {
        Recorder {
            settings,
            entries: Vec::new(),
        }
    }

    pub fn add(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    /// The record of the finished output `image` as bytes to write, with the image's sha256
    /// and size (it is hashed for the record).
    pub fn finish(mut self, image: &File) -> io::Result<(Vec<u8>, [u8; 32], u64)> {
        // Equal keys have equal output bytes (that is the point), so any one of them will do;
        // the first, for a record that is a pure function of the output.
        self.entries
            .sort_by(|a, b| a.key.cmp(&b.key).then(a.pos.cmp(&b.pos)));
        self.entries.dedup_by(|later, first| later.key == first.key);
        let (image_sha256, image_size) = hash_file(image)?;
        let record = Record {
            settings: self.settings,
            image_size,
            image_sha256,
            entries: self.entries,
        };
        Ok((record.to_bytes(), image_sha256, image_size))
    }
}

/// sha256 and size of a whole file, read from its start through positioned reads.
fn hash_file(file: &File) -> io::Result<([u8; 32], u64)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    loop {
        let n = match file.read_at(&mut buf, pos) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok((h.finalize().into(), pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let entry = |k: u8, pos: u64| Entry {
            key: [k; 32],
            pos,
            field: 100,
            sha256: [k ^ 0xff; 32],
            content: [k ^ 0x0f; 32],
        };
        Record {
            settings: "settings".into(),
            image_size: 4096,
            image_sha256: [7; 32],
            entries: vec![entry(1, 96), entry(2, 196)],
        }
    }

    #[test]
    fn a_record_reads_back_as_written() {
        let r = record();
        assert_eq!(Record::parse(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn every_damaged_byte_is_noticed() {
        let bytes = record().to_bytes();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(
                Record::parse(&b).is_err(),
                "byte {i} flipped went unnoticed"
            );
        }
        for len in 0..bytes.len() {
            assert!(Record::parse(&bytes[..len]).is_err(), "cut at {len}");
        }
    }

    /// A record whose checksum was made to fit still cannot point outside its image or name a
    /// key twice.
    #[test]
    fn consistent_but_impossible_records_are_refused() {
        let resum = |mut r: Record, f: &dyn Fn(&mut Record)| {
            f(&mut r);
            Record::parse(&r.to_bytes())
        };
        let outside = resum(record(), &|r| r.entries[1].pos = 4000);
        assert!(outside.unwrap_err().contains("outside"));
        let unsorted = resum(record(), &|r| r.entries.swap(0, 1));
        assert!(unsorted.unwrap_err().contains("sorted"));
        let empty = resum(record(), &|r| r.entries[0].field = DATA_UNCOMPRESSED);
        assert!(empty.unwrap_err().contains("outside"));
    }
}
