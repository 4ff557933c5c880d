//! Metadata blocks: the 8 KiB compressed units every squashfs table is stored in.
//!
//! A table is read whole into one uncompressed stream, with a map from each block's position
//! on disk to its position in the stream, because references into tables name a block's disk
//! position plus an offset inside it. Writing does the reverse and hands out such references
//! as bytes are appended.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::codec::Codec;
use super::error::{Corruption, Error};
use super::format::{le, METADATA_SIZE, METADATA_UNCOMPRESSED};

/// Hard cap on the uncompressed size of all metadata read from one image. Real images stay
/// far below it (a 1 GB rootfs has a few MB of metadata); a crafted one must not make the tool
/// allocate gigabytes.
pub const METADATA_LIMIT: usize = 256 << 20;

/// An image file opened for positioned reads, which knows its own path for error messages.
pub struct Source {
    /// `None` for an image built from nothing (the sample), which has no source bytes.
    file: Option<File>,
    pub path: PathBuf,
    pub len: u64,
    /// Uncompressed metadata handed out so far, checked against [`METADATA_LIMIT`].
    metadata_read: std::cell::Cell<usize>,
}

impl Source {
    pub fn open(path: &Path) -> Result<Source, Error> {
        let file = File::open(path).map_err(|e| Error::io("open the image", path, e))?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io("stat the image", path, e))?;
        if meta.is_dir() {
            return Err(Error::io(
                "read the image",
                path,
                std::io::Error::other("it is a directory"),
            ));
        }
        Ok(Source {
            file: Some(file),
            path: path.to_path_buf(),
            len: meta.len(),
            metadata_read: std::cell::Cell::new(0),
        })
    }

    /// A source with no bytes, for images built from scratch.
    pub fn empty(name: &str) -> Source {
        Source {
            file: None,
            path: PathBuf::from(name),
            len: 0,
            metadata_read: std::cell::Cell::new(0),
        }
    }

    fn file(&self) -> Result<&File, Error> {
        self.file.as_ref().ok_or_else(|| {
            Error::io(
                "read",
                &self.path,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "there is no source image",
                ),
            )
        })
    }

    /// The error for a contradiction found at `offset` in `table`.
    pub fn corrupt(&self, table: &'static str, offset: u64, what: impl Into<String>) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            corruption: Corruption::new(table, offset, what),
        }
    }

    /// Reads exactly `len` bytes at `pos`, which must lie inside the file.
    pub fn read_at(&self, table: &'static str, pos: u64, len: usize) -> Result<Vec<u8>, Error> {
        let end = pos.checked_add(len as u64);
        if end.map_or(true, |e| e > self.len) {
            return Err(self.corrupt(
                table,
                pos,
                format!(
                    "{len} bytes are needed here but the file ends at {}",
                    self.len
                ),
            ));
        }
        let mut buf = vec![0u8; len];
        self.file()?
            .read_exact_at(&mut buf, pos)
            .map_err(|e| Error::io("read the image", &self.path, e))?;
        Ok(buf)
    }

    pub fn read_into(&self, buf: &mut [u8], pos: u64) -> Result<(), Error> {
        self.file()?
            .read_exact_at(buf, pos)
            .map_err(|e| Error::io("read the image", &self.path, e))
    }

    /// Reads one metadata block at `pos`; returns its contents and the position after it.
    pub fn read_metadata_block(
        &self,
        codec: &Codec,
        table: &'static str,
        pos: u64,
    ) -> Result<(Vec<u8>, u64), Error> {
        let header = self.read_at(table, pos, 2)?;
        let header = le::u16(&header, 0);
        let size = (header & !METADATA_UNCOMPRESSED) as usize;
        if size == 0 || size > METADATA_SIZE {
            return Err(self.corrupt(
                table,
                pos,
                format!("a metadata block claims {size} bytes (1 to 8192 allowed)"),
            ));
        }
        let raw = self.read_at(table, pos + 2, size)?;
        let data = if header & METADATA_UNCOMPRESSED != 0 {
            raw
        } else {
            codec
                .decompress(&raw, METADATA_SIZE)
                .map_err(|why| self.corrupt(table, pos, why))?
        };
        let total = self.metadata_read.get() + data.len();
        if total > METADATA_LIMIT {
            return Err(self.corrupt(
                table,
                pos,
                format!("the metadata expands beyond {} MiB", METADATA_LIMIT >> 20),
            ));
        }
        self.metadata_read.set(total);
        Ok((data, pos + 2 + size as u64))
    }

    /// Reads the metadata blocks lying in [start, end) into one stream.
    pub fn read_stream(
        &self,
        codec: &Codec,
        table: &'static str,
        start: u64,
        end: u64,
    ) -> Result<Stream, Error> {
        let mut stream = Stream::default();
        let mut pos = start;
        while pos < end {
            let (data, next) = self.read_metadata_block(codec, table, pos)?;
            if next > end {
                return Err(self.corrupt(table, pos, "a metadata block runs past the table's end"));
            }
            stream.blocks.push((pos - start, stream.data.len()));
            stream.data.extend_from_slice(&data);
            pos = next;
        }
        Ok(stream)
    }

    /// Reads a table of `count` fixed-size entries stored in metadata blocks found through a
    /// lookup array of u64 block positions at `lookup` (the id, fragment and export tables and
    /// the xattr id table).
    pub fn read_indexed_table(
        &self,
        codec: &Codec,
        table: &'static str,
        lookup: u64,
        count: u64,
        entry_size: usize,
    ) -> Result<Vec<u8>, Error> {
        let total = count
            .checked_mul(entry_size as u64)
            .filter(|t| *t <= METADATA_LIMIT as u64)
            .ok_or_else(|| self.corrupt(table, lookup, format!("{count} entries is too many")))?
            as usize;
        let blocks = total.div_ceil(METADATA_SIZE);
        let pointers = self.read_at(table, lookup, blocks * 8)?;
        let mut out = Vec::with_capacity(total);
        for i in 0..blocks {
            let at = le::u64(&pointers, i * 8);
            let (data, _) = self.read_metadata_block(codec, table, at)?;
            let want = (total - out.len()).min(METADATA_SIZE);
            if data.len() < want {
                return Err(self.corrupt(
                    table,
                    at,
                    format!(
                        "a block holds {} bytes where {want} were expected",
                        data.len()
                    ),
                ));
            }
            out.extend_from_slice(&data[..want]);
        }
        Ok(out)
    }
}

/// A table's uncompressed contents, with where each of its blocks started on disk.
#[derive(Debug, Default)]
pub struct Stream {
    pub data: Vec<u8>,
    /// (block start relative to the table, position of its first byte in `data`), ascending.
    pub blocks: Vec<(u64, usize)>,
}

impl Stream {
    /// Translates a (block, offset) reference into a position in `data`.
    pub fn position(&self, block: u64, offset: usize) -> Option<usize> {
        let i = self.blocks.binary_search_by_key(&block, |b| b.0).ok()?;
        let pos = self.blocks[i].1 + offset;
        if pos < self.data.len() || (pos == self.data.len() && offset == 0) {
            Some(pos)
        } else {
            None
        }
    }
}

/// Builds a metadata table block by block.
pub struct Writer<'a> {
    codec: &'a Codec,
    compress: bool,
    out: Vec<u8>,
    pending: Vec<u8>,
}

impl<'a> Writer<'a> {
    pub fn new(codec: &'a Codec, compress: bool) -> Writer<'a> {
        Writer {
            codec,
            compress,
            out: Vec::new(),
            pending: Vec::with_capacity(METADATA_SIZE * 2),
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        while self.pending.len() >= METADATA_SIZE {
            let rest = self.pending.split_off(METADATA_SIZE);
            let block = std::mem::replace(&mut self.pending, rest);
            self.emit(&block);
        }
    }

    fn emit(&mut self, block: &[u8]) {
        let packed = if self.compress {
            self.codec.compress(block)
        } else {
            None
        };
        match packed {
            Some(c) => {
                self.out.extend_from_slice(&(c.len() as u16).to_le_bytes());
                self.out.extend_from_slice(&c);
            }
            None => {
                let header = block.len() as u16 | METADATA_UNCOMPRESSED;
                self.out.extend_from_slice(&header.to_le_bytes());
                self.out.extend_from_slice(block);
            }
        }
    }

    /// Flushes the last partial block and returns the table's bytes.
    pub fn finish(mut self) -> Vec<u8> {
        if !self.pending.is_empty() {
            let block = std::mem::take(&mut self.pending);
            self.emit(&block);
        }
        self.out
    }
}

/// Encodes fixed-size entries as metadata blocks placed at `base` in the output. Returns the
/// blocks' bytes and the lookup array (their positions) that the superblock or a table header
/// points at; the caller decides what, if anything, goes between the two.
pub fn write_table_blocks(
    codec: &Codec,
    compress: bool,
    entries: &[u8],
    base: u64,
) -> (Vec<u8>, Vec<u8>) {
    let mut bytes = Vec::new();
    let mut lookup = Vec::new();
    for chunk in entries.chunks(METADATA_SIZE) {
        lookup.extend_from_slice(&(base + bytes.len() as u64).to_le_bytes());
        let mut w = Writer::new(codec, compress);
        w.write(chunk);
        bytes.extend_from_slice(&w.finish());
    }
    (bytes, lookup)
}
