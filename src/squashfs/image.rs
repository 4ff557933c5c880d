//! Reading an image into memory: its superblock, every inode with the directory tree that
//! names it, and the id, fragment and xattr tables. File data stays on disk.
//!
//! Everything read is checked as it is read (bounds, counts, names, loops), so the writer can
//! trust the model, and a hostile image ends in an error naming the table and position.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::codec::{self, Codec};
use super::dir::{parse_listing, RawEntry};
use super::error::Error;
use super::format::{
    flags, le, split_ref, SuperBlock, SuperBlockError, DATA_UNCOMPRESSED, NOT_SET, NO_FRAGMENT,
    SUPERBLOCK_SIZE,
};
use super::inode::{Body, Inode, Kind};
use super::metadata::{Source, Stream};
use super::xattr::XattrTable;

/// Index of a node in [`Image::nodes`].
pub type NodeId = usize;

/// Where a regular file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// The blocks and fragment the inode points at in the source image.
    Original,
    /// A host file to read when writing (an injected file).
    Host(std::path::PathBuf),
    /// Bytes in memory (the built-in sample image).
    Bytes(Vec<u8>),
}

/// An inode together with what the writer needs to place it.
#[derive(Debug, Clone)]
pub struct Node {
    pub inode: Inode,
    /// For directories: (name, child) sorted by name.
    pub children: Vec<(Vec<u8>, NodeId)>,
    pub content: Content,
    /// Dropped nodes (replaced files with no other link) are not written.
    pub dropped: bool,
    /// Position and length of the inode in the source's inode table stream. The writer keeps
    /// inodes where they were, so that directories the injection does not touch keep their
    /// exact listing (whose headers follow which inodes share a metadata block).
    pub origin: Option<(usize, usize)>,
}

/// A fragment block: where it is and its size field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    pub start: u64,
    pub size: u32,
}

/// An image read into memory.
pub struct Image {
    pub src: Source,
    pub sb: SuperBlock,
    pub codec: Codec,
    /// First byte of the data region (after the superblock and any compressor options).
    pub data_start: u64,
    /// Nodes in the order their inodes had in the source's inode table.
    pub nodes: Vec<Node>,
    pub root: NodeId,
    pub ids: Vec<u32>,
    pub fragments: Vec<Fragment>,
    pub xattrs: Option<XattrTable>,
    /// The source's inode table, uncompressed: the writer lays the new table over it.
    pub inode_stream: Vec<u8>,
}

const INODES: &str = "inode table";
const DIRS: &str = "directory table";

/// An inode met during the tree walk, with its length in the inode stream and its children as
/// (name, inode stream position).
type Found = (Inode, usize, Vec<(Vec<u8>, usize)>);

/// The tables every inode may point into, read before the tree so that each inode can be
/// checked against them.
struct Tables {
    ids: Vec<u32>,
    fragments: Vec<Fragment>,
    xattrs: Option<XattrTable>,
    /// First byte of the data region.
    data_start: u64,
}

impl Image {
    /// Reads an image in the order the format finds things: the superblock, the compressor
    /// options, the id, fragment and xattr tables, then the inode and directory tables walked
    /// as one tree from the root. Each part is checked before the next is trusted.
    pub fn open(path: &Path) -> Result<Image, Error> {
        let src = Source::open(path)?;
        let sb = read_superblock(&src)?;
        let (codec, data_start) = read_compressor(&src, &sb)?;
        let tables = Tables {
            ids: read_ids(&src, &codec, &sb)?,
            fragments: read_fragments(&src, &codec, &sb)?,
            xattrs: read_xattrs(&src, &codec, &sb)?,
            data_start,
        };
        let (inode_stream, dir_stream) = read_tree_tables(&src, &codec, &sb)?;
        let (found, root_pos) = walk_tree(&src, &sb, &inode_stream, &dir_stream)?;
        let (nodes, root) = number_nodes(&src, &sb, &tables, found, root_pos)?;
        Ok(Image {
            root,
            src,
            sb,
            codec,
            data_start: tables.data_start,
            nodes,
            ids: tables.ids,
            fragments: tables.fragments,
            xattrs: tables.xattrs,
            inode_stream: inode_stream.data,
        })
    }

    /// Finds a path ("/a/b") in the tree; `None` if a component is missing.
    pub fn lookup(&self, path: &str) -> Option<NodeId> {
        let mut at = self.root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let children = &self.nodes[at].children;
            let i = children
                .binary_search_by(|(name, _)| name.as_slice().cmp(part.as_bytes()))
                .ok()?;
            at = children[i].1;
        }
        Some(at)
    }

    /// The sha256 of a regular file's contents, read a block at a time so that memory stays
    /// bounded by the block size whatever size the file claims.
    pub fn hash_file(&self, id: NodeId) -> Result<[u8; 32], Error> {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        self.file_pieces(id, u64::MAX, &mut |piece| hash.update(piece))?;
        Ok(hash.finalize().into())
    }

    /// Reads and decompresses one data block or fragment.
    pub fn read_block(&self, pos: u64, field: u32, max: usize) -> Result<Vec<u8>, Error> {
        let size = (field & !DATA_UNCOMPRESSED) as usize;
        let raw = self.src.read_at("data", pos, size)?;
        if field & DATA_UNCOMPRESSED != 0 {
            return Ok(raw);
        }
        self.codec
            .decompress(&raw, (self.sb.block_size as usize).max(max))
            .map_err(|why| self.src.corrupt("data", pos, why))
    }

    pub fn compressor_name(&self) -> &'static str {
        codec::name_of(self.sb.compressor_id)
    }
}

/// The superblock, checked against the file's size; a file too short for one is either a
/// truncated image (it starts with the magic) or not an image at all.
fn read_superblock(src: &Source) -> Result<SuperBlock, Error> {
    let path = &src.path;
    if src.len < SUPERBLOCK_SIZE as u64 {
        if src.len >= 4 && src.read_at("superblock", 0, 4)? == b"hsqs" {
            return Err(src.corrupt("superblock", 0, "the file ends inside the superblock"));
        }
        return Err(Error::NotSquashfs { path: path.clone() });
    }
    let mut raw = [0u8; SUPERBLOCK_SIZE];
    src.read_into(&mut raw, 0)?;
    SuperBlock::parse(&raw, src.len).map_err(|e| match e {
        SuperBlockError::BadMagic => Error::NotSquashfs { path: path.clone() },
        SuperBlockError::Version(major, minor) => Error::Version {
            path: path.clone(),
            major,
            minor,
        },
        SuperBlockError::Corrupt(corruption) => Error::Corrupt {
            path: path.clone(),
            corruption,
        },
    })
}

/// The codec, from the compressor id and the options block that may follow the superblock;
/// returns it with the position where the data region starts.
fn read_compressor(src: &Source, sb: &SuperBlock) -> Result<(Codec, u64), Error> {
    let (options, data_start) = if sb.has(flags::COMPRESSOR_OPTIONS) {
        let header = le::u16(&src.read_at("compressor options", 96, 2)?, 0);
        let size = (header & 0x7fff) as usize;
        if header & 0x8000 == 0 || size == 0 || size > 64 {
            return Err(src.corrupt("compressor options", 96, "the options block is malformed"));
        }
        let opts = src.read_at("compressor options", 98, size)?;
        (Some(opts), 98 + size as u64)
    } else {
        (None, SUPERBLOCK_SIZE as u64)
    };
    let codec =
        Codec::from_image(sb.compressor_id, options.as_deref(), sb.block_size).map_err(|what| {
            Error::Unsupported {
                path: src.path.clone(),
                what,
            }
        })?;
    if data_start > sb.inode_table {
        return Err(src.corrupt("superblock", 0, "the inode table starts inside the options"));
    }
    Ok((codec, data_start))
}

/// The id table: the uids and gids inodes refer to by index.
fn read_ids(src: &Source, codec: &Codec, sb: &SuperBlock) -> Result<Vec<u32>, Error> {
    let ids = src.read_indexed_table(codec, "id table", sb.id_table, u64::from(sb.id_count), 4)?;
    Ok(ids.chunks_exact(4).map(|b| le::u32(b, 0)).collect())
}

/// The fragment table: where each fragment block is and its size field.
fn read_fragments(src: &Source, codec: &Codec, sb: &SuperBlock) -> Result<Vec<Fragment>, Error> {
    if sb.fragment_count == 0 {
        return Ok(Vec::new());
    }
    if sb.fragment_table == NOT_SET {
        return Err(src.corrupt("superblock", 0, "fragments are counted but have no table"));
    }
    let raw = src.read_indexed_table(
        codec,
        "fragment table",
        sb.fragment_table,
        u64::from(sb.fragment_count),
        16,
    )?;
    Ok(raw
        .chunks_exact(16)
        .map(|e| Fragment {
            start: le::u64(e, 0),
            size: le::u32(e, 8),
        })
        .collect())
}

/// The xattr table, when the image has one.
fn read_xattrs(src: &Source, codec: &Codec, sb: &SuperBlock) -> Result<Option<XattrTable>, Error> {
    if sb.xattr_table == NOT_SET {
        return Ok(None);
    }
    XattrTable::read(src, codec, sb.xattr_table).map(Some)
}

/// The inode and directory tables, each as one uncompressed stream.
fn read_tree_tables(
    src: &Source,
    codec: &Codec,
    sb: &SuperBlock,
) -> Result<(Stream, Stream), Error> {
    let dir_end = directory_table_end(src, sb)?;
    let inode_stream = src.read_stream(codec, INODES, sb.inode_table, sb.directory_table)?;
    let dir_stream = src.read_stream(codec, DIRS, sb.directory_table, dir_end)?;
    // The smallest inode (a fifo) takes 20 bytes: a larger count is a lie, and believing it
    // would size allocations below by it.
    if sb.inode_count as usize > inode_stream.data.len() / 20 {
        return Err(src.corrupt(
            "superblock",
            0,
            format!("{} inodes cannot fit in the inode table", sb.inode_count),
        ));
    }
    Ok((inode_stream, dir_stream))
}

/// Walks the tree from the root, keyed by each inode's position in the inode stream; returns
/// every inode found and the root's position.
fn walk_tree(
    src: &Source,
    sb: &SuperBlock,
    inode_stream: &Stream,
    dir_stream: &Stream,
) -> Result<(BTreeMap<usize, Found>, usize), Error> {
    let (root_block, root_offset) = split_ref(sb.root_inode);
    let root_pos = inode_stream
        .position(root_block, root_offset)
        .ok_or_else(|| src.corrupt(INODES, sb.inode_table, "the root inode is not in the table"))?;
    let mut walk = Walk {
        src,
        sb,
        inodes: inode_stream,
        dirs: dir_stream,
        found: BTreeMap::new(),
        inode_bytes: 0,
        listed: 0,
    };
    let (root_inode, root_len) = walk.parse(root_pos)?;
    if root_inode.kind != Kind::Dir {
        return Err(src.corrupt(INODES, root_pos as u64, "the root inode is not a directory"));
    }
    walk.inode_bytes = root_len;
    walk.found
        .insert(root_pos, (root_inode, root_len, Vec::new()));
    let mut queue = vec![root_pos];
    while let Some(dir_pos) = queue.pop() {
        let (start_block, entries) = walk.listing(dir_pos)?;
        let mut children = Vec::with_capacity(entries.len());
        for e in entries {
            let pos = walk.visit(&e, start_block, &mut queue)?;
            children.push((e.name, pos));
        }
        if let Some(entry) = walk.found.get_mut(&dir_pos) {
            entry.2 = children;
        }
    }

    // Every inode of a well-formed image hangs in the tree. Fewer means the root reference
    // or a listing points somewhere else: the image would be written back with inodes
    // missing, under a superblock that still counts them.
    if walk.found.len() != sb.inode_count as usize {
        return Err(src.corrupt(
            "superblock",
            0,
            format!(
                "the directory tree holds {} inodes but the superblock counts {}",
                walk.found.len(),
                sb.inode_count
            ),
        ));
    }
    Ok((walk.found, root_pos))
}

/// The state of the tree walk, with the totals that keep overlapping structures from being
/// counted more than once.
struct Walk<'a> {
    src: &'a Source,
    sb: &'a SuperBlock,
    inodes: &'a Stream,
    dirs: &'a Stream,
    found: BTreeMap<usize, Found>,
    /// No two inodes of a well-formed image share bytes, so together they fit in the inode
    /// table. A file inode claiming a huge size reads its block list from the rest of the
    /// table; many such inodes overlapping would each claim it again (hundreds of them,
    /// four megabytes apiece, from one table of a few).
    inode_bytes: usize,
    /// No two directories of a well-formed image share listing bytes, so all listings fit
    /// in the table together. Believing listings that overlap would let a few hundred
    /// kilobytes of table name millions of entries (every directory reusing one long
    /// listing), in memory and time quadratic in the table's size.
    listed: usize,
}

impl Walk<'_> {
    fn parse(&self, pos: usize) -> Result<(Inode, usize), Error> {
        Inode::parse(&self.inodes.data, pos, self.sb.block_size).map_err(|why| {
            self.src
                .corrupt(INODES, pos as u64, format!("{why} (stream position)"))
        })
    }

    /// The entries of the directory whose inode is at `dir_pos`, with its listing's block.
    fn listing(&mut self, dir_pos: usize) -> Result<(u32, Vec<RawEntry>), Error> {
        let src = self.src;
        let (start_block, offset, file_size) = match &self.found[&dir_pos].0.body {
            Body::Dir {
                start_block,
                offset,
                file_size,
                ..
            } => (*start_block, *offset, *file_size),
            _ => unreachable!("only directories are queued"),
        };
        if file_size < 3 {
            return Err(src.corrupt(INODES, dir_pos as u64, "a directory's size is below 3"));
        }
        let len = file_size as usize - 3;
        let entries = if len == 0 {
            Vec::new()
        } else {
            let at = self
                .dirs
                .position(u64::from(start_block), offset as usize)
                .ok_or_else(|| {
                    src.corrupt(
                        DIRS,
                        u64::from(start_block),
                        "a directory's listing is outside the table",
                    )
                })?;
            parse_listing(&self.dirs.data, at, len)
                .map_err(|why| src.corrupt(DIRS, u64::from(start_block), why))?
        };
        self.listed += len;
        if self.listed > self.dirs.data.len() {
            return Err(src.corrupt(
                DIRS,
                u64::from(start_block),
                "directory listings overlap (together they are longer than the table)",
            ));
        }
        Ok((start_block, entries))
    }

    /// Follows one entry of a listing at `start_block` to its inode, which is read and
    /// checked the first time it is met (a directory is queued for its own listing); returns
    /// the inode's position.
    fn visit(
        &mut self,
        e: &RawEntry,
        start_block: u32,
        queue: &mut Vec<usize>,
    ) -> Result<usize, Error> {
        let src = self.src;
        let pos = self
            .inodes
            .position(u64::from(e.inode_block), e.inode_offset as usize)
            .ok_or_else(|| {
                src.corrupt(
                    DIRS,
                    u64::from(start_block),
                    "an entry points outside the inode table",
                )
            })?;
        if let Some((inode, _, _)) = self.found.get(&pos) {
            if inode.kind == Kind::Dir || e.kind == Kind::Dir {
                return Err(src.corrupt(
                    DIRS,
                    u64::from(start_block),
                    format!(
                        "the directory {:?} is reachable twice (a loop or a hardlinked directory)",
                        String::from_utf8_lossy(&e.name)
                    ),
                ));
            }
            return Ok(pos);
        }
        let (inode, len) = self.parse(pos)?;
        self.inode_bytes += len;
        if self.inode_bytes > self.inodes.data.len() {
            return Err(src.corrupt(
                INODES,
                pos as u64,
                "inodes overlap (together they are longer than the table)",
            ));
        }
        if inode.kind != e.kind {
            return Err(src.corrupt(
                INODES,
                pos as u64,
                format!(
                    "the entry {:?} says {} but its inode is a {}",
                    String::from_utf8_lossy(&e.name),
                    e.kind,
                    inode.kind
                ),
            ));
        }
        if self.found.len() >= self.sb.inode_count as usize {
            return Err(src.corrupt(INODES, pos as u64, "more inodes than the superblock counts"));
        }
        if inode.kind == Kind::Dir {
            queue.push(pos);
        }
        self.found.insert(pos, (inode, len, Vec::new()));
        Ok(pos)
    }
}

/// Turns the inodes found into nodes in inode-table order, checking each inode's number and
/// its references into the other tables; returns the nodes and the root's id.
fn number_nodes(
    src: &Source,
    sb: &SuperBlock,
    tables: &Tables,
    found: BTreeMap<usize, Found>,
    root_pos: usize,
) -> Result<(Vec<Node>, NodeId), Error> {
    let id_of: HashMap<usize, NodeId> = found.keys().enumerate().map(|(i, p)| (*p, i)).collect();
    let mut numbers = vec![false; sb.inode_count as usize + 1];
    let mut nodes = Vec::with_capacity(found.len());
    for (pos, (inode, len, children)) in found {
        let n = inode.number as usize;
        if n == 0 || n > sb.inode_count as usize || numbers[n] {
            return Err(src.corrupt(
                INODES,
                pos as u64,
                format!("inode number {n} is out of range or used twice"),
            ));
        }
        numbers[n] = true;
        check_inode(src, sb, tables, &inode, pos)?;
        nodes.push(Node {
            inode,
            children: children
                .into_iter()
                .map(|(name, p)| (name, id_of[&p]))
                .collect(),
            content: Content::Original,
            dropped: false,
            origin: Some((pos, len)),
        });
    }
    Ok((nodes, id_of[&root_pos]))
}

/// Checks the fields of an inode that point into other tables or the data region.
fn check_inode(
    src: &Source,
    sb: &SuperBlock,
    tables: &Tables,
    inode: &Inode,
    pos: usize,
) -> Result<(), Error> {
    let (ids, fragments, data_start) = (&tables.ids, &tables.fragments, tables.data_start);
    let bad =
        |what: String| Err(src.corrupt(INODES, pos as u64, format!("{what} (stream position)")));
    if inode.uid_idx as usize >= ids.len() || inode.gid_idx as usize >= ids.len() {
        return bad("an owner index is outside the id table".into());
    }
    if inode.xattr != super::format::NO_XATTR
        && tables
            .xattrs
            .as_ref()
            .map_or(true, |x| inode.xattr as usize >= x.sets.len())
    {
        return bad(format!(
            "xattr index {} is outside the xattr table",
            inode.xattr
        ));
    }
    if let Body::File {
        blocks_start,
        file_size,
        fragment,
        frag_offset,
        blocks,
        ..
    } = &inode.body
    {
        let mut end = *blocks_start;
        for b in blocks {
            let size = u64::from(b & !DATA_UNCOMPRESSED);
            if size > u64::from(sb.block_size) {
                return bad(format!(
                    "a data block claims {size} bytes, more than the block size"
                ));
            }
            end = end.saturating_add(size);
        }
        let has_data = blocks.iter().any(|b| b & !DATA_UNCOMPRESSED != 0);
        if has_data && (*blocks_start < data_start || end > sb.inode_table) {
            return bad("a file's data lies outside the data region".into());
        }
        if *fragment != NO_FRAGMENT {
            let tail = file_size % u64::from(sb.block_size);
            let f = fragments.get(*fragment as usize);
            let fits = f.is_some_and(|f| {
                let size = u64::from(f.size & !DATA_UNCOMPRESSED);
                size <= u64::from(sb.block_size)
                    && f.start >= data_start
                    && f.start.saturating_add(size) <= sb.inode_table
                    && u64::from(*frag_offset) + tail <= u64::from(sb.block_size)
            });
            if tail == 0 || !fits {
                return bad(format!(
                    "fragment {fragment} is missing or does not hold the file's tail"
                ));
            }
        }
    }
    Ok(())
}

/// The directory table ends where the first later structure begins; the superblock does not
/// say where, so it is the lowest of the later tables' blocks and lookups.
fn directory_table_end(src: &Source, sb: &SuperBlock) -> Result<u64, Error> {
    let mut end = sb.bytes_used;
    let mut consider = |table: &'static str, lookup: u64, first_block: bool| -> Result<(), Error> {
        if lookup == NOT_SET || lookup < sb.directory_table {
            return Ok(());
        }
        end = end.min(lookup);
        if first_block {
            let p = le::u64(&src.read_at(table, lookup, 8)?, 0);
            if p >= sb.directory_table {
                end = end.min(p);
            }
        }
        Ok(())
    };
    consider("fragment table", sb.fragment_table, sb.fragment_count > 0)?;
    consider("export table", sb.export_table, true)?;
    consider("id table", sb.id_table, true)?;
    if sb.xattr_table != NOT_SET {
        let kv_start = le::u64(&src.read_at("xattr table", sb.xattr_table, 8)?, 0);
        consider("xattr table", kv_start, false)?;
        consider("xattr table", sb.xattr_table, false)?;
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image whose tree holds fewer inodes than its superblock counts (a root reference
    /// moved onto a subdirectory looks the same) used to be accepted and written back with the
    /// missing inodes still counted; the read-back then failed naming the temporary file.
    #[test]
    fn a_tree_holding_fewer_inodes_than_counted_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sample.img");
        super::super::write_sample_image(&path, 1).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let count = le::u32(&bytes, 4);
        bytes[4..8].copy_from_slice(&(count + 1).to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let err = Image::open(&path).err().expect("the image is refused");
        assert!(
            err.to_string()
                .contains(&format!("holds {count} inodes but the superblock counts")),
            "{err}"
        );
    }
}
