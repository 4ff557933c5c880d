//! Writing an image from the in-memory model: the data region (kept raw or transcoded block by
//! block in parallel), then every metadata table re-encoded, then the superblock.
//!
//! Data never passes through memory whole: raw copies stream in 1 MiB pieces and transcoding
//! works on a bounded batch of blocks at a time, so peak memory follows the metadata, not the
//! file data.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::block_cache::{self, content_digest};
use super::codec::Codec;
use super::dir::{encode_listing, OutEntry};
use super::error::Error;
use super::format::{
    flags, make_ref, SuperBlock, DATA_UNCOMPRESSED, METADATA_SIZE, METADATA_UNCOMPRESSED, NOT_SET,
    NO_FRAGMENT, PAD_TO, SUPERBLOCK_SIZE,
};
use super::image::{Content, Fragment, Image, NodeId};
use super::inode::{Body, IndexEntry, Kind};
use super::metadata::{write_table_blocks, Writer};
use super::reuse;

/// How the output is to be encoded.
pub struct Plan {
    pub codec: Codec,
    /// Copy the source's data region byte for byte (same compressor, options and block size).
    pub keep_raw: bool,
    pub flags: u16,
    pub mkfs_time: u32,
    pub jobs: usize,
}

/// What the writer reports back: the image size and a digest of each file it wrote from
/// outside the source, for the read-back check.
pub struct Written {
    pub bytes: u64,
    pub digests: HashMap<NodeId, [u8; 32]>,
}

/// The output file with the position of the next byte.
struct Out {
    w: BufWriter<File>,
    pos: u64,
    path: PathBuf,
}

impl Out {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.w
            .write_all(bytes)
            .map_err(|e| Error::io("write the output image", &self.path, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }
}

/// Raw copies move this much at a time.
const COPY_CHUNK: usize = 1 << 20;

pub fn write(
    img: &mut Image,
    plan: &Plan,
    file: File,
    path: &Path,
    reuse: &mut Reuse,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Written, Error> {
    let mut out = Out {
        w: BufWriter::with_capacity(COPY_CHUNK, file),
        pos: 0,
        path: path.to_path_buf(),
    };
    out.put(&[0u8; SUPERBLOCK_SIZE])?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(plan.jobs)
        .build()
        .map_err(|e| Error::io("start worker threads for", path, std::io::Error::other(e)))?;
    if let Some(opts) = plan.codec.options() {
        out.put(&(opts.len() as u16 | METADATA_UNCOMPRESSED).to_le_bytes())?;
        out.put(opts)?;
    }
    let new_bytes: u64 = img
        .nodes
        .iter()
        .filter(|n| !n.dropped)
        .map(|n| match &n.content {
            Content::Host(p) => std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
            Content::Bytes(b) => b.len() as u64,
            Content::Original => 0,
        })
        .sum();

    // The data region.
    let fragments = if plan.keep_raw {
        let total = img.sb.inode_table - img.data_start + new_bytes;
        copy_raw(img, &mut out, total, progress)?;
        img.fragments.clone()
    } else {
        transcode(img, plan, &pool, &mut out, new_bytes, reuse, progress)?
    };
    let done_before_new = out.pos;
    let mut digests = HashMap::new();
    let compress_data = plan.flags & flags::UNCOMPRESSED_DATA == 0;
    for id in 0..img.nodes.len() {
        if img.nodes[id].dropped || img.nodes[id].content == Content::Original {
            continue;
        }
        let (body, digest) = write_content(img, id, plan, compress_data, &mut out)?;
        img.nodes[id].inode.body = body;
        digests.insert(id, digest);
    }
    progress(out.pos - done_before_new, out.pos - done_before_new);

    // The metadata tables.
    let compress_inodes = plan.flags & flags::UNCOMPRESSED_INODES == 0;
    let (inode_table, dir_table, refs) = encode_tree(img, &plan.codec, compress_inodes, &pool);
    let mut sb = img.sb.clone();
    sb.mkfs_time = plan.mkfs_time;
    sb.compressor_id = plan.codec.id();
    sb.flags = plan.flags;
    sb.root_inode = refs[img.root];
    sb.inode_table = out.pos;
    out.put(&inode_table)?;
    sb.directory_table = out.pos;
    out.put(&dir_table)?;

    sb.fragment_count = fragments.len() as u32;
    if fragments.is_empty() && img.sb.fragment_table == NOT_SET {
        sb.fragment_table = NOT_SET;
    } else {
        let mut raw = Vec::with_capacity(fragments.len() * 16);
        for f in &fragments {
            raw.extend_from_slice(&f.start.to_le_bytes());
            raw.extend_from_slice(&f.size.to_le_bytes());
            raw.extend_from_slice(&0u32.to_le_bytes());
        }
        let compress = plan.flags & flags::UNCOMPRESSED_FRAGMENTS == 0;
        let (blocks, lookup) = write_table_blocks(&plan.codec, compress, &raw, out.pos);
        out.put(&blocks)?;
        sb.fragment_table = out.pos;
        out.put(&lookup)?;
    }

    if img.sb.export_table != NOT_SET {
        let mut table = vec![0u64; sb.inode_count as usize];
        for (id, node) in img.nodes.iter().enumerate() {
            if let Some(slot) = (node.inode.number as usize)
                .checked_sub(1)
                .and_then(|i| table.get_mut(i))
            {
                if !node.dropped {
                    *slot = refs[id];
                }
            }
        }
        let raw: Vec<u8> = table.iter().flat_map(|r| r.to_le_bytes()).collect();
        let (blocks, lookup) = write_table_blocks(&plan.codec, compress_inodes, &raw, out.pos);
        out.put(&blocks)?;
        sb.export_table = out.pos;
        out.put(&lookup)?;
    }

    let raw: Vec<u8> = img.ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    let compress_ids = plan.flags & flags::UNCOMPRESSED_IDS == 0;
    let (blocks, lookup) = write_table_blocks(&plan.codec, compress_ids, &raw, out.pos);
    out.put(&blocks)?;
    sb.id_table = out.pos;
    sb.id_count = img.ids.len() as u16;
    out.put(&lookup)?;

    if let Some(x) = &img.xattrs {
        let compress = plan.flags & flags::UNCOMPRESSED_XATTRS == 0;
        let (bytes, header) = x.write(&plan.codec, compress, out.pos);
        out.put(&bytes)?;
        sb.xattr_table = header;
    } else {
        sb.xattr_table = NOT_SET;
    }

    sb.bytes_used = out.pos;
    let padding = (PAD_TO - out.pos % PAD_TO) % PAD_TO;
    out.put(&vec![0u8; padding as usize])?;
    let mut file = out
        .w
        .into_inner()
        .map_err(|e| Error::io("write the output image", path, e.into_error()))?;
    let io = |e| Error::io("write the output image", path, e);
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&sb.to_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    img.sb = sb;
    Ok(Written {
        bytes: img.sb.bytes_used,
        digests,
    })
}

fn copy_raw(
    img: &Image,
    out: &mut Out,
    total: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(), Error> {
    let mut pos = img.data_start;
    let end = img.sb.inode_table;
    let mut buf = vec![0u8; COPY_CHUNK];
    while pos < end {
        let n = ((end - pos) as usize).min(COPY_CHUNK);
        img.src.read_into(&mut buf[..n], pos)?;
        out.put(&buf[..n])?;
        pos += n as u64;
        progress(pos - img.data_start, total);
    }
    Ok(())
}

/// One stored block: (position, size field).
type Extent = (u64, u32);

fn extent_len(field: u32) -> u64 {
    u64::from(field & !DATA_UNCOMPRESSED)
}

/// Decompresses every data block and fragment of the source and compresses it with the output
/// codec, in parallel batches, writing them in their original order. Rewrites the file inodes
/// to point at the new blocks and returns the new fragment table.
///
/// With `reuse`, a block the previous output's record knows is copied from there instead of
/// compressed (the bytes are the same, see `reuse.rs`), then a block the block cache has is
/// taken from it, and every block written is recorded for the next run and kept in the cache.
/// Only the blocks not copied count towards a batch, so that a few changed blocks among many
/// reused ones still keep every worker busy.
fn transcode(
    img: &mut Image,
    plan: &Plan,
    pool: &rayon::ThreadPool,
    out: &mut Out,
    new_bytes: u64,
    reuse: &mut Reuse,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<Fragment>, Error> {
    let mut extents: Vec<Extent> = Vec::new();
    for node in img
        .nodes
        .iter()
        .filter(|n| !n.dropped && n.content == Content::Original)
    {
        if let Body::File {
            blocks_start,
            blocks,
            ..
        } = &node.inode.body
        {
            let mut pos = *blocks_start;
            for &b in blocks {
                if extent_len(b) != 0 {
                    extents.push((pos, b));
                    pos += extent_len(b);
                }
            }
        }
    }
    extents.extend(
        img.fragments
            .iter()
            .filter(|f| extent_len(f.size) != 0)
            .map(|f| (f.start, f.size)),
    );
    extents.sort_unstable();
    extents.dedup();
    for w in extents.windows(2) {
        if w[1].0 < w[0].0.saturating_add(extent_len(w[0].1)) {
            return Err(img.src.corrupt("data", w[1].0, "two data blocks overlap"));
        }
    }
    let total: u64 = extents.iter().map(|e| extent_len(e.1)).sum::<u64>() + new_bytes;

    // Out of `reuse` while the workers share it, back in once every block is written.
    let cache = reuse.cache.take();
    let encoder = Encoder {
        source: &img.codec,
        output: &plan.codec,
        compress: plan.flags & flags::UNCOMPRESSED_DATA == 0,
        block_size: img.sb.block_size as usize,
        keyed: reuse.recorder.is_some(),
        cache: cache.as_ref(),
    };
    // Enough blocks in flight to keep every worker busy, few enough to bound memory.
    let batch = (plan.jobs * 16).clamp(16, (64 << 20) / encoder.block_size);
    let mut moved: HashMap<u64, Extent> = HashMap::with_capacity(extents.len());
    let mut done = 0u64;
    let mut rest = &extents[..];
    while !rest.is_empty() {
        // A window of blocks in order, holding the source bytes of at most `batch` to compress.
        let mut window: Vec<(Extent, Step)> = Vec::new();
        let mut fresh = 0;
        while let Some((&(pos, field), tail)) = rest.split_first() {
            if fresh == batch || window.len() == WINDOW_LIMIT {
                break;
            }
            rest = tail;
            let raw = img.src.read_at("data", pos, extent_len(field) as usize)?;
            let known = reuse
                .previous
                .as_ref()
                .and_then(|p| p.lookup(&reuse::key(field, &raw)));
            let step = match known {
                Some(entry) => Step::Copy(entry),
                None => {
                    fresh += 1;
                    Step::Compress(raw)
                }
            };
            window.push(((pos, field), step));
        }
        // A block to copy only asks whether the cache has it too (and marks it used), so that
        // the cache keeps what this output is made of even when this builder never needs it.
        let packed: Vec<Worked> = pool.install(|| {
            window
                .par_iter()
                .map(|((_, field), step)| match step {
                    Step::Compress(raw) => Worked::Packed(encoder.pack(*field, raw)),
                    Step::Copy(entry) => Worked::InCache(
                        encoder
                            .cache
                            .map_or(true, |cache| cache.refresh(&entry.content)),
                    ),
                })
                .collect()
        });
        for (((pos, field), step), worked) in window.into_iter().zip(packed) {
            let block = match (step, worked) {
                (_, Worked::Packed(result)) => {
                    result.map_err(|why| img.src.corrupt("data", pos, why))?
                }
                (Step::Copy(entry), Worked::InCache(in_cache)) => {
                    let block = reuse.copy(&entry, || {
                        let raw = img.src.read_at("data", pos, extent_len(field) as usize)?;
                        encoder
                            .pack(field, &raw)
                            .map_err(|why| img.src.corrupt("data", pos, why))
                    })?;
                    if let (false, Some(cache)) = (in_cache, encoder.cache) {
                        cache.put(&entry.content, &block.bytes, block.field);
                    }
                    block
                }
                (Step::Compress(_), Worked::InCache(_)) => {
                    unreachable!("every block to compress is packed")
                }
            };
            reuse.transcoded += 1;
            moved.insert(pos, (out.pos, block.field));
            if let (Some(recorder), Some(keys)) = (&mut reuse.recorder, block.keys) {
                recorder.add(reuse::Entry {
                    key: keys.source,
                    pos: out.pos,
                    field: block.field,
                    sha256: keys.sha256,
                    content: keys.content,
                });
            }
            out.put(&block.bytes)?;
            done += extent_len(field);
            progress(done, total);
        }
    }
    reuse.cache = cache;

    for node in img
        .nodes
        .iter_mut()
        .filter(|n| !n.dropped && n.content == Content::Original)
    {
        if let Body::File {
            blocks_start,
            blocks,
            ..
        } = &mut node.inode.body
        {
            let mut pos = *blocks_start;
            let mut first = None;
            for b in blocks.iter_mut() {
                if extent_len(*b) == 0 {
                    continue;
                }
                let (new_pos, new_field) = moved[&pos];
                first.get_or_insert(new_pos);
                pos += extent_len(*b);
                *b = new_field;
            }
            *blocks_start = first.unwrap_or(SUPERBLOCK_SIZE as u64);
        }
    }
    Ok(img
        .fragments
        .iter()
        .map(|f| match moved.get(&f.start) {
            Some(&(start, size)) if extent_len(f.size) != 0 => Fragment { start, size },
            _ => *f,
        })
        .collect())
}

/// Blocks a transcoding window may hold in all; those to copy cost a few bytes each until they
/// are written, so this only bounds the bookkeeping.
const WINDOW_LIMIT: usize = 4096;

/// What happens to one source block.
enum Step {
    /// Its output bytes are known from the previous output.
    Copy(reuse::Entry),
    /// Its stored bytes, to decompress and compress.
    Compress(Vec<u8>),
}

/// What a worker did with a block of the window.
enum Worked {
    /// Made its output bytes (decoded, then taken from the cache or compressed).
    Packed(Result<Packed, String>),
    /// Looked a block to copy up in the cache: whether it is there (true without a cache).
    InCache(bool),
}

/// An output block: its bytes, size field and, when recording, what the record knows it by.
pub(crate) struct Packed {
    pub bytes: Vec<u8>,
    pub field: u32,
    pub keys: Option<Keys>,
}

/// What a record entry knows a block by, besides where it is.
#[derive(Clone, Copy)]
pub(crate) struct Keys {
    /// The source block's key (its stored bytes).
    pub source: [u8; 32],
    /// sha256 of its uncompressed bytes: the block cache's key of it.
    pub content: [u8; 32],
    /// sha256 of the output bytes.
    pub sha256: [u8; 32],
}

/// Turns a source block into an output block.
struct Encoder<'a> {
    source: &'a Codec,
    output: &'a Codec,
    compress: bool,
    block_size: usize,
    /// Whether to compute the keys a record needs.
    keyed: bool,
    cache: Option<&'a block_cache::BlockCache>,
}

impl Encoder<'_> {
    fn pack(&self, field: u32, raw: &[u8]) -> Result<Packed, String> {
        let plain = if field & DATA_UNCOMPRESSED != 0 {
            raw.to_vec()
        } else {
            self.source.decompress(raw, self.block_size)?
        };
        let content = (self.keyed || self.cache.is_some()).then(|| content_digest(&plain));
        let cached = match (self.cache, &content) {
            (Some(cache), Some(content)) => cache.get(content, &plain),
            _ => None,
        };
        let (bytes, new_field) = match cached {
            Some(found) => found,
            None => {
                let (bytes, new_field) = pack(self.output, self.compress, plain);
                if let (Some(cache), Some(content)) = (self.cache, &content) {
                    cache.put(content, &bytes, new_field);
                }
                (bytes, new_field)
            }
        };
        let keys = match (self.keyed, content) {
            (true, Some(content)) => Some(Keys {
                source: reuse::key(field, raw),
                content,
                sha256: Sha256::digest(&bytes).into(),
            }),
            _ => None,
        };
        Ok(Packed {
            bytes,
            field: new_field,
            keys,
        })
    }
}

/// What spares transcoding work: the previous output to copy blocks from, the record of this
/// one, and the block cache, each when there is one.
#[derive(Default)]
pub struct Reuse {
    pub(crate) previous: Option<reuse::Previous>,
    pub(crate) recorder: Option<reuse::Recorder>,
    pub(crate) cache: Option<block_cache::BlockCache>,
    /// Blocks copied from the previous output, and blocks transcoded in all.
    pub copied: u64,
    pub transcoded: u64,
}

impl Reuse {
    /// The output block of a source block the previous output's record knows: its recorded
    /// bytes, or, when they no longer match the record (the image changed during this run),
    /// what `compress` makes, and nothing more is copied from that image.
    pub(crate) fn copy(
        &mut self,
        entry: &reuse::Entry,
        compress: impl FnOnce() -> Result<Packed, Error>,
    ) -> Result<Packed, Error> {
        let read = self.previous.as_ref().map(|p| p.read(entry));
        match read {
            Some(Ok(bytes)) => {
                self.copied += 1;
                Ok(Packed {
                    bytes,
                    field: entry.field,
                    keys: Some(Keys {
                        source: entry.key,
                        content: entry.content,
                        sha256: entry.sha256,
                    }),
                })
            }
            Some(Err(why)) => {
                log::warn!("{why}; compressing the remaining blocks instead of copying them");
                self.previous = None;
                compress()
            }
            None => compress(),
        }
    }
}

/// Compresses one block if that makes it smaller; returns the bytes and their size field.
fn pack(codec: &Codec, compress: bool, plain: Vec<u8>) -> (Vec<u8>, u32) {
    match if compress {
        codec.compress(&plain)
    } else {
        None
    } {
        Some(c) => {
            let len = c.len() as u32;
            (c, len)
        }
        None => {
            let len = plain.len() as u32 | DATA_UNCOMPRESSED;
            (plain, len)
        }
    }
}

/// Writes a file from outside the source as whole blocks (no fragment), as mksquashfs does
/// with -no-fragments, and returns its inode body and the digest of its bytes.
fn write_content(
    img: &Image,
    id: NodeId,
    plan: &Plan,
    compress: bool,
    out: &mut Out,
) -> Result<(Body, [u8; 32]), Error> {
    let mut reader: Box<dyn Read + '_> = match &img.nodes[id].content {
        Content::Host(p) => {
            Box::new(File::open(p).map_err(|e| Error::io("read the file to inject", p.clone(), e))?)
        }
        Content::Bytes(b) => Box::new(b.as_slice()),
        Content::Original => unreachable!("only new content is written here"),
    };
    let source_name = match &img.nodes[id].content {
        Content::Host(p) => p.clone(),
        _ => PathBuf::from("<built-in>"),
    };
    let block_size = img.sb.block_size as usize;
    let mut hash = Sha256::new();
    let mut blocks = Vec::new();
    let start = out.pos;
    let mut size = 0u64;
    let mut buf = vec![0u8; block_size];
    loop {
        let mut filled = 0;
        while filled < block_size {
            let n = reader
                .read(&mut buf[filled..])
                .map_err(|e| Error::io("read the file to inject", source_name.clone(), e))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        hash.update(&buf[..filled]);
        size += filled as u64;
        let (bytes, field) = pack(&plan.codec, compress, buf[..filled].to_vec());
        out.put(&bytes)?;
        blocks.push(field);
        if filled < block_size {
            break;
        }
    }
    let body = Body::File {
        blocks_start: if blocks.is_empty() { 0 } else { start },
        file_size: size,
        sparse: 0,
        fragment: NO_FRAGMENT,
        frag_offset: 0,
        blocks,
    };
    Ok((body, hash.finalize().into()))
}

/// Rounds of re-resolving references between the inode and directory tables before the inode
/// table is stored uncompressed, which makes its block positions independent of its contents.
const MAX_ROUNDS: usize = 8;

/// Encodes the inode and directory tables; returns both and each node's new inode reference.
///
/// Inodes stay at their position in the source's (uncompressed) inode table, and new ones go
/// after them. That keeps every untouched directory's listing exactly as it was: a listing
/// starts a new header wherever consecutive entries' inodes sit in different metadata blocks,
/// so moving inodes would reshape directories that have nothing to do with the injection.
/// A replaced inode's old bytes stay in place, unreferenced, as mksquashfs' append mode leaves
/// them.
///
/// The two tables point into each other (entries at inodes, directory inodes at listings),
/// and a reference names a block's compressed position, so they are encoded in rounds until
/// the positions they assume are the positions they produce.
fn encode_tree(
    img: &mut Image,
    codec: &Codec,
    compress: bool,
    pool: &rayon::ThreadPool,
) -> (Vec<u8>, Vec<u8>, Vec<u64>) {
    let order = post_order(img);
    let (pos, end) = layout(img, &order);
    let dirs: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|id| img.nodes[*id].inode.kind == Kind::Dir)
        .collect();

    let mut base = img.inode_stream.clone();
    base.resize(end.max(base.len()), 0);
    let mut inode_blocks = BlockCache::default();
    let mut dir_blocks = BlockCache::default();
    let mut inode_starts: Vec<u64> = Vec::new();
    let mut compress_inodes = compress;
    for round in 0.. {
        if round == MAX_ROUNDS {
            // Uncompressed blocks have sizes that do not depend on what they hold.
            compress_inodes = false;
            inode_starts = uncompressed_starts(base.len());
        }
        let (dir_stream, listings) = dir_stream(img, &dirs, &pos, &inode_starts);
        let (dir_table, dir_starts) = dir_blocks.encode(&dir_stream, codec, compress, pool);
        let mut stream = base.clone();
        let mut buf = Vec::new();
        for &id in &order {
            let index = match listings.get(&id) {
                Some((at, len, pending)) => {
                    let start = |p: usize| {
                        dir_starts
                            .get(p / METADATA_SIZE)
                            .copied()
                            .unwrap_or(dir_table.len() as u64)
                    };
                    if let Body::Dir {
                        start_block,
                        offset,
                        file_size,
                        ..
                    } = &mut img.nodes[id].inode.body
                    {
                        *start_block = start(*at) as u32;
                        *offset = (at % METADATA_SIZE) as u16;
                        *file_size = *len as u32 + 3;
                    }
                    pending
                        .iter()
                        .map(|p| IndexEntry {
                            index: p.index,
                            start: start(at + p.index as usize) as u32,
                            name: p.name.clone(),
                        })
                        .collect()
                }
                None => Vec::new(),
            };
            buf.clear();
            img.nodes[id].inode.write(&mut buf, &index);
            stream[pos[id]..pos[id] + buf.len()].copy_from_slice(&buf);
        }
        let (inode_table, starts) = inode_blocks.encode(&stream, codec, compress_inodes, pool);
        if starts == inode_starts || round >= MAX_ROUNDS {
            let mut refs = vec![0u64; img.nodes.len()];
            for &id in &order {
                let block = inode_starts
                    .get(pos[id] / METADATA_SIZE)
                    .copied()
                    .unwrap_or(0);
                refs[id] = make_ref(block, pos[id] % METADATA_SIZE);
            }
            return (inode_table, dir_table, refs);
        }
        inode_starts = starts;
    }
    unreachable!("the loop returns by round MAX_ROUNDS")
}

/// Live nodes, every directory after its children (the order mksquashfs writes them in).
fn post_order(img: &Image) -> Vec<NodeId> {
    let mut order = Vec::with_capacity(img.nodes.len());
    let mut seen = vec![false; img.nodes.len()];
    let mut stack = vec![(img.root, false)];
    while let Some((id, expanded)) = stack.pop() {
        if seen[id] {
            continue;
        }
        if img.nodes[id].inode.kind == Kind::Dir && !expanded {
            stack.push((id, true));
            for (_, c) in img.nodes[id].children.iter().rev() {
                stack.push((*c, false));
            }
            continue;
        }
        seen[id] = true;
        order.push(id);
    }
    order
}

/// Decides where each inode goes in the new inode stream; returns the positions (indexed by
/// node) and the stream's length. Inodes keep their source position unless they grew (a
/// directory that gained an index entry); new and grown ones are appended in `order`.
fn layout(img: &mut Image, order: &[NodeId]) -> (Vec<usize>, usize) {
    let mut moved = vec![false; img.nodes.len()];
    loop {
        let mut pos: Vec<Option<usize>> = img
            .nodes
            .iter()
            .enumerate()
            .map(|(id, n)| n.origin.filter(|_| !moved[id]).map(|o| o.0))
            .collect();
        let mut end = img.inode_stream.len();
        let mut grew = false;
        let mut buf = Vec::new();
        for &id in order {
            let mut index = Vec::new();
            if img.nodes[id].inode.kind == Kind::Dir {
                // Block numbers stand in for block positions: they split headers the same way.
                let (listing, pending) = listing(img, id, |c| {
                    let p = pos[c].unwrap_or(0);
                    ((p / METADATA_SIZE) as u64, p % METADATA_SIZE)
                });
                if let Body::Dir { file_size, .. } = &mut img.nodes[id].inode.body {
                    *file_size = listing.len() as u32 + 3;
                }
                index = pending
                    .into_iter()
                    .map(|p| IndexEntry {
                        index: p.index,
                        start: 0,
                        name: p.name,
                    })
                    .collect();
            }
            buf.clear();
            img.nodes[id].inode.write(&mut buf, &index);
            match (pos[id], img.nodes[id].origin) {
                (Some(_), Some((_, len))) if buf.len() > len => {
                    moved[id] = true;
                    grew = true;
                }
                (Some(_), _) => {}
                (None, _) => {
                    pos[id] = Some(end);
                    end += buf.len();
                }
            }
        }
        if !grew {
            return (pos.into_iter().map(|p| p.unwrap_or(0)).collect(), end);
        }
    }
}

/// A directory's listing, with each child's inode reference given by `inode_ref`.
fn listing(
    img: &Image,
    id: NodeId,
    inode_ref: impl Fn(NodeId) -> (u64, usize),
) -> (Vec<u8>, Vec<super::dir::PendingIndex>) {
    let entries: Vec<OutEntry<'_>> = img.nodes[id]
        .children
        .iter()
        .map(|(name, c)| {
            let (block, offset) = inode_ref(*c);
            OutEntry {
                name,
                kind: img.nodes[*c].inode.kind,
                inode_block: block as u32,
                inode_offset: offset as u16,
                number: img.nodes[*c].inode.number,
            }
        })
        .collect();
    encode_listing(&entries)
}

/// Where each directory's listing is in the directory stream: (position, length, index).
type Listings = HashMap<NodeId, (usize, usize, Vec<super::dir::PendingIndex>)>;

/// The uncompressed directory table, with listings in `dirs` order, for inode blocks at
/// `inode_starts`.
fn dir_stream(
    img: &Image,
    dirs: &[NodeId],
    pos: &[usize],
    inode_starts: &[u64],
) -> (Vec<u8>, Listings) {
    let mut stream = Vec::new();
    let mut listings = HashMap::with_capacity(dirs.len());
    for &id in dirs {
        let (bytes, pending) = listing(img, id, |c| {
            let p = pos[c];
            (
                inode_starts.get(p / METADATA_SIZE).copied().unwrap_or(0),
                p % METADATA_SIZE,
            )
        });
        listings.insert(id, (stream.len(), bytes.len(), pending));
        stream.extend_from_slice(&bytes);
    }
    (stream, listings)
}

fn uncompressed_starts(len: usize) -> Vec<u64> {
    (0..len.div_ceil(METADATA_SIZE))
        .map(|k| (k * (METADATA_SIZE + 2)) as u64)
        .collect()
}

/// Compressed metadata blocks of the previous round, reused where a block's bytes did not
/// change (most of them, after the first round).
#[derive(Default)]
struct BlockCache {
    blocks: Vec<(Vec<u8>, bool, Vec<u8>)>,
}

impl BlockCache {
    /// Splits a stream into metadata blocks, compressing them in parallel; returns the table's
    /// bytes and each block's start.
    fn encode(
        &mut self,
        stream: &[u8],
        codec: &Codec,
        compress: bool,
        pool: &rayon::ThreadPool,
    ) -> (Vec<u8>, Vec<u64>) {
        let previous = std::mem::take(&mut self.blocks);
        let blocks: Vec<(Vec<u8>, bool, Vec<u8>)> = pool.install(|| {
            stream
                .par_chunks(METADATA_SIZE)
                .enumerate()
                .map(|(k, chunk)| match previous.get(k) {
                    Some((plain, c, packed)) if plain.as_slice() == chunk && *c == compress => {
                        (plain.clone(), *c, packed.clone())
                    }
                    _ => {
                        let mut w = Writer::new(codec, compress);
                        w.write(chunk);
                        (chunk.to_vec(), compress, w.finish())
                    }
                })
                .collect()
        });
        let mut out = Vec::with_capacity(stream.len());
        let mut starts = Vec::with_capacity(blocks.len());
        for (_, _, packed) in &blocks {
            starts.push(out.len() as u64);
            out.extend_from_slice(packed);
        }
        self.blocks = blocks;
        (out, starts)
    }
}

/// The superblock a fresh image starts from, for the built-in sample.
pub fn blank_superblock(block_size: u32, codec: &Codec, mkfs_time: u32) -> SuperBlock {
    SuperBlock {
        inode_count: 0,
        mkfs_time,
        block_size,
        fragment_count: 0,
        compressor_id: codec.id(),
        block_log: block_size.trailing_zeros() as u16,
        flags: flags::NO_FRAGMENTS | flags::EXPORTABLE,
        id_count: 0,
        root_inode: 0,
        bytes_used: 0,
        id_table: 0,
        xattr_table: NOT_SET,
        inode_table: SUPERBLOCK_SIZE as u64,
        directory_table: SUPERBLOCK_SIZE as u64,
        fragment_table: NOT_SET,
        export_table: 0,
    }
}
