//! The extended attribute table: key/value pairs in metadata blocks, and an id table whose
//! entries (one per distinct attribute set) inodes point at by number.
//!
//! The pairs are carried over unchanged. Only the references change, because the table moves
//! and may be recompressed: references into it name a block's compressed position, so they are
//! kept as positions in the uncompressed stream while the table is in memory.

use std::collections::HashSet;

use super::codec::Codec;
use super::error::Error;
use super::format::{le, make_ref, split_ref, METADATA_SIZE};
use super::metadata::{write_table_blocks, Source, Stream};

const TABLE: &str = "xattr table";
/// Set in a key's type when its value is stored elsewhere and only referenced here.
const VALUE_OUT_OF_LINE: u16 = 0x100;
const ID_ENTRY_SIZE: usize = 16;
/// How many times references into the table are re-resolved against recompressed blocks before
/// the table is stored uncompressed (which makes block positions independent of the contents).
const MAX_FIXPOINT_ROUNDS: usize = 8;

/// One attribute set: where its pairs start in the stream, and their count and total size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrSet {
    pub pos: usize,
    pub count: u32,
    pub size: u32,
}

/// The whole table in memory.
#[derive(Debug, Clone, Default)]
pub struct XattrTable {
    /// The key/value stream, uncompressed.
    pub kv: Vec<u8>,
    pub sets: Vec<AttrSet>,
    /// Out-of-line values: (position of the 8-byte reference in `kv`, position it points to).
    pub out_of_line: Vec<(usize, usize)>,
}

impl XattrTable {
    /// Reads the table whose id header is at `header_pos`; `codec` decodes its blocks.
    pub fn read(src: &Source, codec: &Codec, header_pos: u64) -> Result<XattrTable, Error> {
        let header = src.read_at(TABLE, header_pos, 16)?;
        let kv_start = le::u64(&header, 0);
        let count = u64::from(le::u32(&header, 8));
        let id_blocks = (count as usize * ID_ENTRY_SIZE).div_ceil(METADATA_SIZE);
        let pointers = src.read_at(TABLE, header_pos + 16, id_blocks * 8)?;
        let kv_end = (0..id_blocks)
            .map(|i| le::u64(&pointers, i * 8))
            .min()
            .unwrap_or(header_pos);
        if kv_start > kv_end || kv_end > header_pos {
            return Err(src.corrupt(TABLE, header_pos, "the key/value blocks are out of place"));
        }
        let ids = src.read_indexed_table(codec, TABLE, header_pos + 16, count, ID_ENTRY_SIZE)?;
        let stream = src.read_stream(codec, TABLE, kv_start, kv_end)?;
        let mut table = XattrTable::default();
        // No two attribute sets of a well-formed image share pairs (a repeated set is one id),
        // so the pairs walked fit in the table together. Sets that overlap could each claim
        // most of it: a million ids times a megabyte of pairs, and a reference recorded for
        // every out-of-line value on the way. An id repeating another is walked once.
        let mut walked: HashSet<(usize, u32)> = HashSet::new();
        let mut walked_bytes = 0usize;
        for entry in ids.chunks_exact(ID_ENTRY_SIZE) {
            let (block, offset) = split_ref(le::u64(entry, 0));
            let pos = stream.position(block, offset).ok_or_else(|| {
                src.corrupt(
                    TABLE,
                    kv_start + block,
                    "an attribute set points outside the table",
                )
            })?;
            let set = AttrSet {
                pos,
                count: le::u32(entry, 8),
                size: le::u32(entry, 12),
            };
            if walked.insert((set.pos, set.count)) {
                walked_bytes += table.scan_set(src, &stream, &set)?;
                if walked_bytes > stream.data.len() {
                    return Err(src.corrupt(
                        TABLE,
                        header_pos,
                        "attribute sets overlap (together they are longer than the table)",
                    ));
                }
            }
            table.sets.push(set);
        }
        table.out_of_line.sort_unstable();
        table.out_of_line.dedup();
        table.kv = stream.data;
        Ok(table)
    }

    /// Walks one set's pairs to check their bounds and record out-of-line references; returns
    /// the bytes walked.
    fn scan_set(&mut self, src: &Source, stream: &Stream, set: &AttrSet) -> Result<usize, Error> {
        let data = &stream.data;
        let bad =
            |what: &str| src.corrupt(TABLE, set.pos as u64, format!("{what} (stream position)"));
        let mut at = set.pos;
        for _ in 0..set.count {
            let key = data
                .get(at..at + 4)
                .ok_or_else(|| bad("an attribute key runs past the table"))?;
            let kind = le::u16(key, 0);
            let name_len = le::u16(key, 2) as usize;
            if kind & !VALUE_OUT_OF_LINE > 2 {
                return Err(bad("an attribute has an unknown namespace"));
            }
            at += 4 + name_len;
            let vsize = data
                .get(at..at + 4)
                .map(|b| le::u32(b, 0) as usize)
                .ok_or_else(|| bad("an attribute value runs past the table"))?;
            if kind & VALUE_OUT_OF_LINE != 0 {
                let r = data
                    .get(at + 4..at + 12)
                    .filter(|_| vsize == 8)
                    .map(|b| le::u64(b, 0))
                    .ok_or_else(|| bad("an out-of-line value reference is malformed"))?;
                let (block, offset) = split_ref(r);
                let target = stream
                    .position(block, offset)
                    .filter(|t| {
                        data.len() >= t + 4 && data.len() - t - 4 >= le::u32(data, *t) as usize
                    })
                    .ok_or_else(|| bad("an out-of-line value points outside the table"))?;
                self.out_of_line.push((at + 4, target));
            }
            at = at
                .checked_add(4 + vsize)
                .filter(|a| *a <= data.len())
                .ok_or_else(|| bad("an attribute value runs past the table"))?;
        }
        Ok(at - set.pos)
    }

    /// Encodes the table to sit at `base` in the output. Returns its bytes and the position of
    /// its id header (what the superblock points at).
    pub fn write(&self, codec: &Codec, compress: bool, base: u64) -> (Vec<u8>, u64) {
        let mut kv = self.kv.clone();
        let mut compress_kv = compress;
        let mut rounds = 0;
        let (blocks, starts) = loop {
            let (blocks, starts) = encode_stream(codec, compress_kv, &kv);
            let mut changed = false;
            for &(field, target) in &self.out_of_line {
                let r = stream_ref(&starts, target).to_le_bytes();
                if kv[field..field + 8] != r {
                    kv[field..field + 8].copy_from_slice(&r);
                    changed = true;
                }
            }
            if !changed {
                break (blocks, starts);
            }
            rounds += 1;
            if rounds >= MAX_FIXPOINT_ROUNDS {
                compress_kv = false;
            }
        };
        let mut out = blocks;
        let mut ids = Vec::with_capacity(self.sets.len() * ID_ENTRY_SIZE);
        for set in &self.sets {
            ids.extend_from_slice(&stream_ref(&starts, set.pos).to_le_bytes());
            ids.extend_from_slice(&set.count.to_le_bytes());
            ids.extend_from_slice(&set.size.to_le_bytes());
        }
        let (id_blocks, lookup) =
            write_table_blocks(codec, compress, &ids, base + out.len() as u64);
        out.extend_from_slice(&id_blocks);
        let header_pos = base + out.len() as u64;
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&(self.sets.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&lookup);
        (out, header_pos)
    }
}

/// Chunks a stream into metadata blocks; returns the bytes and each block's start.
fn encode_stream(codec: &Codec, compress: bool, data: &[u8]) -> (Vec<u8>, Vec<u64>) {
    let mut out = Vec::new();
    let mut starts = Vec::new();
    for chunk in data.chunks(METADATA_SIZE) {
        starts.push(out.len() as u64);
        let mut w = super::metadata::Writer::new(codec, compress);
        w.write(chunk);
        out.extend_from_slice(&w.finish());
    }
    (out, starts)
}

fn stream_ref(starts: &[u64], pos: usize) -> u64 {
    let block = starts.get(pos / METADATA_SIZE).copied().unwrap_or(0);
    make_ref(block, pos % METADATA_SIZE)
}
