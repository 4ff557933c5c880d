//! Reading an image into memory: its superblock, every inode with the directory tree that
//! names it, and the id, fragment and xattr tables. File data stays on disk.
//!
//! Everything read is checked as it is read (bounds, counts, names, loops), so the writer can
//! trust the model, and a hostile image ends in an error naming the table and position.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::codec::{self, Codec};
use super::dir::parse_listing;
use super::error::Error;
use super::format::{
    flags, le, split_ref, SuperBlock, SuperBlockError, DATA_UNCOMPRESSED, NOT_SET, NO_FRAGMENT,
    SUPERBLOCK_SIZE,
};
use super::inode::{Body, Inode, Kind};
use super::metadata::Source;
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

/// An inode met during the tree walk, with its length in the inode stream and its children as
/// (name, inode stream position).
type Found = (Inode, usize, Vec<(Vec<u8>, usize)>);
const DIRS: &str = "directory table";

impl Image {
    pub fn open(path: &Path) -> Result<Image, Error> {
        let src = Source::open(path)?;
        if src.len < SUPERBLOCK_SIZE as u64 {
            if src.len >= 4 && src.read_at("superblock", 0, 4)? == b"hsqs" {
                return Err(src.corrupt("superblock", 0, "the file ends inside the superblock"));
            }
            return Err(Error::NotSquashfs {
                path: path.to_path_buf(),
            });
        }
        let mut raw = [0u8; SUPERBLOCK_SIZE];
        src.read_into(&mut raw, 0)?;
        let sb = SuperBlock::parse(&raw, src.len).map_err(|e| match e {
            SuperBlockError::BadMagic => Error::NotSquashfs {
                path: path.to_path_buf(),
            },
            SuperBlockError::Version(major, minor) => Error::Version {
                path: path.to_path_buf(),
                major,
                minor,
            },
            SuperBlockError::Corrupt(corruption) => Error::Corrupt {
                path: path.to_path_buf(),
                corruption,
            },
        })?;

        let (options, data_start) = if sb.has(flags::COMPRESSOR_OPTIONS) {
            let header = le::u16(&src.read_at("compressor options", 96, 2)?, 0);
            let size = (header & 0x7fff) as usize;
            if header & 0x8000 == 0 || size == 0 || size > 64 {
                return Err(src.corrupt(
                    "compressor options",
                    96,
                    "the options block is malformed",
                ));
            }
            let opts = src.read_at("compressor options", 98, size)?;
            (Some(opts), 98 + size as u64)
        } else {
            (None, SUPERBLOCK_SIZE as u64)
        };
        let codec = Codec::from_image(sb.compressor_id, options.as_deref(), sb.block_size)
            .map_err(|what| Error::Unsupported {
                path: path.to_path_buf(),
                what,
            })?;
        if data_start > sb.inode_table {
            return Err(src.corrupt("superblock", 0, "the inode table starts inside the options"));
        }

        let ids =
            src.read_indexed_table(&codec, "id table", sb.id_table, u64::from(sb.id_count), 4)?;
        let ids: Vec<u32> = ids.chunks_exact(4).map(|b| le::u32(b, 0)).collect();

        let fragments = if sb.fragment_count > 0 {
            if sb.fragment_table == NOT_SET {
                return Err(src.corrupt(
                    "superblock",
                    0,
                    "fragments are counted but have no table",
                ));
            }
            let raw = src.read_indexed_table(
                &codec,
                "fragment table",
                sb.fragment_table,
                u64::from(sb.fragment_count),
                16,
            )?;
            raw.chunks_exact(16)
                .map(|e| Fragment {
                    start: le::u64(e, 0),
                    size: le::u32(e, 8),
                })
                .collect()
        } else {
            Vec::new()
        };

        let xattrs = if sb.xattr_table != NOT_SET {
            Some(XattrTable::read(&src, &codec, sb.xattr_table)?)
        } else {
            None
        };

        let dir_end = directory_table_end(&src, &sb)?;
        let inode_stream = src.read_stream(&codec, INODES, sb.inode_table, sb.directory_table)?;
        let dir_stream = src.read_stream(&codec, DIRS, sb.directory_table, dir_end)?;
        // The smallest inode (a fifo) takes 20 bytes: a larger count is a lie, and believing it
        // would size allocations below by it.
        if sb.inode_count as usize > inode_stream.data.len() / 20 {
            return Err(src.corrupt(
                "superblock",
                0,
                format!("{} inodes cannot fit in the inode table", sb.inode_count),
            ));
        }

        // Walk the tree from the root, keyed by each inode's position in the inode stream.
        let (root_block, root_offset) = split_ref(sb.root_inode);
        let root_pos = inode_stream
            .position(root_block, root_offset)
            .ok_or_else(|| {
                src.corrupt(INODES, sb.inode_table, "the root inode is not in the table")
            })?;
        let parse = |pos: usize| {
            Inode::parse(&inode_stream.data, pos, sb.block_size)
                .map_err(|why| src.corrupt(INODES, pos as u64, format!("{why} (stream position)")))
        };
        let (root_inode, root_len) = parse(root_pos)?;
        if root_inode.kind != Kind::Dir {
            return Err(src.corrupt(INODES, root_pos as u64, "the root inode is not a directory"));
        }
        // No two inodes of a well-formed image share bytes, so together they fit in the inode
        // table. A file inode claiming a huge size reads its block list from the rest of the
        // table; many such inodes overlapping would each claim it again (hundreds of them,
        // four megabytes apiece, from one table of a few).
        let mut inode_bytes = root_len;
        let mut found: BTreeMap<usize, Found> = BTreeMap::new();
        found.insert(root_pos, (root_inode, root_len, Vec::new()));
        let mut queue = vec![root_pos];
        // No two directories of a well-formed image share listing bytes, so all listings fit
        // in the table together. Believing listings that overlap would let a few hundred
        // kilobytes of table name millions of entries (every directory reusing one long
        // listing), in memory and time quadratic in the table's size.
        let mut listed = 0usize;
        while let Some(dir_pos) = queue.pop() {
            let (start_block, offset, file_size) = match &found[&dir_pos].0.body {
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
                let at = dir_stream
                    .position(u64::from(start_block), offset as usize)
                    .ok_or_else(|| {
                        src.corrupt(
                            DIRS,
                            u64::from(start_block),
                            "a directory's listing is outside the table",
                        )
                    })?;
                parse_listing(&dir_stream.data, at, len)
                    .map_err(|why| src.corrupt(DIRS, u64::from(start_block), why))?
            };
            listed += len;
            if listed > dir_stream.data.len() {
                return Err(src.corrupt(
                    DIRS,
                    u64::from(start_block),
                    "directory listings overlap (together they are longer than the table)",
                ));
            }
            let mut children = Vec::with_capacity(entries.len());
            for e in entries {
                let pos = inode_stream
                    .position(u64::from(e.inode_block), e.inode_offset as usize)
                    .ok_or_else(|| {
                        src.corrupt(
                            DIRS,
                            u64::from(start_block),
                            "an entry points outside the inode table",
                        )
                    })?;
                if let Some((inode, _, _)) = found.get(&pos) {
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
                } else {
                    let (inode, len) = parse(pos)?;
                    inode_bytes += len;
                    if inode_bytes > inode_stream.data.len() {
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
                    if found.len() >= sb.inode_count as usize {
                        return Err(src.corrupt(
                            INODES,
                            pos as u64,
                            "more inodes than the superblock counts",
                        ));
                    }
                    if inode.kind == Kind::Dir {
                        queue.push(pos);
                    }
                    found.insert(pos, (inode, len, Vec::new()));
                }
                children.push((e.name, pos));
            }
            if let Some(entry) = found.get_mut(&dir_pos) {
                entry.2 = children;
            }
        }

        // Every inode of a well-formed image hangs in the tree. Fewer means the root reference
        // or a listing points somewhere else: the image would be written back with inodes
        // missing, under a superblock that still counts them.
        if found.len() != sb.inode_count as usize {
            return Err(src.corrupt(
                "superblock",
                0,
                format!(
                    "the directory tree holds {} inodes but the superblock counts {}",
                    found.len(),
                    sb.inode_count
                ),
            ));
        }
        let id_of: HashMap<usize, NodeId> =
            found.keys().enumerate().map(|(i, p)| (*p, i)).collect();
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
            check_inode(
                &src,
                &sb,
                &ids,
                &fragments,
                xattrs.as_ref(),
                &inode,
                pos,
                data_start,
            )?;
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
        Ok(Image {
            root: id_of[&root_pos],
            src,
            sb,
            codec,
            data_start,
            nodes,
            ids,
            fragments,
            xattrs,
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

/// Checks the fields of an inode that point into other tables or the data region.
#[allow(clippy::too_many_arguments)]
fn check_inode(
    src: &Source,
    sb: &SuperBlock,
    ids: &[u32],
    fragments: &[Fragment],
    xattrs: Option<&XattrTable>,
    inode: &Inode,
    pos: usize,
    data_start: u64,
) -> Result<(), Error> {
    let bad =
        |what: String| Err(src.corrupt(INODES, pos as u64, format!("{what} (stream position)")));
    if inode.uid_idx as usize >= ids.len() || inode.gid_idx as usize >= ids.len() {
        return bad("an owner index is outside the id table".into());
    }
    if inode.xattr != super::format::NO_XATTR
        && xattrs.map_or(true, |x| inode.xattr as usize >= x.sets.len())
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
