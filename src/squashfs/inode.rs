//! Inodes: the fourteen on-disk inode layouts, parsed into one typed structure and written back.
//!
//! Every field the format stores is kept, so an inode the injection does not touch is written
//! back with the same values. Only positions (data start, directory location) are rewritten,
//! because the tables they point into move.

use super::format::{le, NO_FRAGMENT, NO_XATTR};

/// What kind of file an inode is; the basic on-disk type code is `kind as u16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir = 1,
    File = 2,
    Symlink = 3,
    BlockDev = 4,
    CharDev = 5,
    Fifo = 6,
    Socket = 7,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Dir => "directory",
            Kind::File => "regular file",
            Kind::Symlink => "symlink",
            Kind::BlockDev => "block device",
            Kind::CharDev => "character device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        })
    }
}

impl Kind {
    fn from_basic(code: u16) -> Option<Kind> {
        Some(match code {
            1 => Kind::Dir,
            2 => Kind::File,
            3 => Kind::Symlink,
            4 => Kind::BlockDev,
            5 => Kind::CharDev,
            6 => Kind::Fifo,
            7 => Kind::Socket,
            _ => return None,
        })
    }

    /// The type code a directory entry carries for this kind (always the basic one).
    pub fn basic_code(self) -> u16 {
        self as u16
    }

    pub fn from_dir_entry(code: u16) -> Option<Kind> {
        Kind::from_basic(code)
    }
}

/// The parts of an inode that depend on its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Dir {
        /// Where the listing starts: directory table block (relative) and offset in it.
        start_block: u32,
        offset: u16,
        /// Listing size plus 3 (for "." and ".."), as the format defines it.
        file_size: u32,
        /// Inode number of the parent directory.
        parent: u32,
    },
    File {
        blocks_start: u64,
        file_size: u64,
        /// Bytes saved by sparse blocks (extended inodes only; kept as read).
        sparse: u64,
        fragment: u32,
        frag_offset: u32,
        /// Size field of each full (or, without a fragment, each) data block.
        blocks: Vec<u32>,
    },
    Symlink {
        target: Vec<u8>,
    },
    Dev {
        rdev: u32,
    },
    Ipc,
}

/// One inode, with its header fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    pub kind: Kind,
    /// Whether the source stored it in the extended layout; kept so that the layout survives.
    pub extended: bool,
    pub mode: u16,
    pub uid_idx: u16,
    pub gid_idx: u16,
    pub mtime: u32,
    pub number: u32,
    pub nlink: u32,
    pub xattr: u32,
    pub body: Body,
}

/// One entry of an extended directory's index, pointing into the middle of a long listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Byte offset of a header within the listing.
    pub index: u32,
    /// Directory table block (relative) that header starts in.
    pub start: u32,
    /// First name under that header.
    pub name: Vec<u8>,
}

struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| {
                format!("an inode runs past the end of the inode table (needs {n} more bytes)")
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, String> {
        self.take(2).map(|b| le::u16(b, 0))
    }
    fn u32(&mut self) -> Result<u32, String> {
        self.take(4).map(|b| le::u32(b, 0))
    }
    fn u64(&mut self) -> Result<u64, String> {
        self.take(8).map(|b| le::u64(b, 0))
    }
}

impl Inode {
    /// Parses the inode starting at `pos` of the inode table stream; also returns how many
    /// bytes it takes there.
    pub fn parse(data: &[u8], pos: usize, block_size: u32) -> Result<(Inode, usize), String> {
        let mut c = Cursor { data, pos };
        let code = c.u16()?;
        let (kind, extended) = match code {
            1..=7 => (Kind::from_basic(code), false),
            8..=14 => (Kind::from_basic(code - 7), true),
            _ => (None, false),
        };
        let kind = kind.ok_or_else(|| format!("unknown inode type {code}"))?;
        let mode = c.u16()?;
        let uid_idx = c.u16()?;
        let gid_idx = c.u16()?;
        let mtime = c.u32()?;
        let number = c.u32()?;
        let mut nlink = 1;
        let mut xattr = NO_XATTR;
        let body = match (kind, extended) {
            (Kind::Dir, false) => {
                let start_block = c.u32()?;
                nlink = c.u32()?;
                let file_size = u32::from(c.u16()?);
                let offset = c.u16()?;
                let parent = c.u32()?;
                Body::Dir {
                    start_block,
                    offset,
                    file_size,
                    parent,
                }
            }
            (Kind::Dir, true) => {
                nlink = c.u32()?;
                let file_size = c.u32()?;
                let start_block = c.u32()?;
                let parent = c.u32()?;
                let index_count = c.u16()?;
                let offset = c.u16()?;
                xattr = c.u32()?;
                // The index is rebuilt on write; here it only has to be stepped over.
                for _ in 0..index_count {
                    c.take(8)?;
                    let name_size = c.u32()? as usize;
                    c.take(name_size.saturating_add(1))?;
                }
                Body::Dir {
                    start_block,
                    offset,
                    file_size,
                    parent,
                }
            }
            (Kind::File, _) => {
                let (blocks_start, fragment, frag_offset, file_size, sparse);
                if extended {
                    blocks_start = c.u64()?;
                    file_size = c.u64()?;
                    sparse = c.u64()?;
                    nlink = c.u32()?;
                    fragment = c.u32()?;
                    frag_offset = c.u32()?;
                    xattr = c.u32()?;
                } else {
                    blocks_start = u64::from(c.u32()?);
                    fragment = c.u32()?;
                    frag_offset = c.u32()?;
                    file_size = u64::from(c.u32()?);
                    sparse = 0;
                }
                let bs = u64::from(block_size);
                let count = if fragment == NO_FRAGMENT {
                    file_size.div_ceil(bs)
                } else {
                    file_size / bs
                };
                // Bounded by the table itself: a huge claimed size fails here, before allocating.
                let raw = c.take(
                    usize::try_from(count)
                        .unwrap_or(usize::MAX)
                        .saturating_mul(4),
                )?;
                let blocks = raw.chunks_exact(4).map(|b| le::u32(b, 0)).collect();
                Body::File {
                    blocks_start,
                    file_size,
                    sparse,
                    fragment,
                    frag_offset,
                    blocks,
                }
            }
            (Kind::Symlink, _) => {
                nlink = c.u32()?;
                let size = c.u32()? as usize;
                if size == 0 || size > 4096 {
                    return Err(format!(
                        "a symlink target of {size} bytes (1 to 4096 allowed)"
                    ));
                }
                let target = c.take(size)?.to_vec();
                if extended {
                    xattr = c.u32()?;
                }
                Body::Symlink { target }
            }
            (Kind::BlockDev | Kind::CharDev, _) => {
                nlink = c.u32()?;
                let rdev = c.u32()?;
                if extended {
                    xattr = c.u32()?;
                }
                Body::Dev { rdev }
            }
            (Kind::Fifo | Kind::Socket, _) => {
                nlink = c.u32()?;
                if extended {
                    xattr = c.u32()?;
                }
                Body::Ipc
            }
        };
        let inode = Inode {
            kind,
            extended,
            mode,
            uid_idx,
            gid_idx,
            mtime,
            number,
            nlink,
            xattr,
            body,
        };
        Ok((inode, c.pos - pos))
    }

    /// Appends the on-disk form. Directories pass their freshly built index; the extended
    /// layout is used where the source used it or where a field needs it.
    pub fn write(&self, out: &mut Vec<u8>, index: &[IndexEntry]) {
        let ext = self.needs_extended(index);
        let code = self.kind.basic_code() + if ext { 7 } else { 0 };
        let mut w = |b: &[u8]| out.extend_from_slice(b);
        w(&code.to_le_bytes());
        w(&self.mode.to_le_bytes());
        w(&self.uid_idx.to_le_bytes());
        w(&self.gid_idx.to_le_bytes());
        w(&self.mtime.to_le_bytes());
        w(&self.number.to_le_bytes());
        match &self.body {
            Body::Dir {
                start_block,
                offset,
                file_size,
                parent,
            } => {
                if ext {
                    w(&self.nlink.to_le_bytes());
                    w(&file_size.to_le_bytes());
                    w(&start_block.to_le_bytes());
                    w(&parent.to_le_bytes());
                    w(&(index.len() as u16).to_le_bytes());
                    w(&offset.to_le_bytes());
                    w(&self.xattr.to_le_bytes());
                    for e in index {
                        w(&e.index.to_le_bytes());
                        w(&e.start.to_le_bytes());
                        w(&(e.name.len() as u32 - 1).to_le_bytes());
                        w(&e.name);
                    }
                } else {
                    w(&start_block.to_le_bytes());
                    w(&self.nlink.to_le_bytes());
                    w(&(*file_size as u16).to_le_bytes());
                    w(&offset.to_le_bytes());
                    w(&parent.to_le_bytes());
                }
            }
            Body::File {
                blocks_start,
                file_size,
                sparse,
                fragment,
                frag_offset,
                blocks,
            } => {
                if ext {
                    w(&blocks_start.to_le_bytes());
                    w(&file_size.to_le_bytes());
                    w(&sparse.to_le_bytes());
                    w(&self.nlink.to_le_bytes());
                    w(&fragment.to_le_bytes());
                    w(&frag_offset.to_le_bytes());
                    w(&self.xattr.to_le_bytes());
                } else {
                    w(&(*blocks_start as u32).to_le_bytes());
                    w(&fragment.to_le_bytes());
                    w(&frag_offset.to_le_bytes());
                    w(&(*file_size as u32).to_le_bytes());
                }
                for b in blocks {
                    w(&b.to_le_bytes());
                }
            }
            Body::Symlink { target } => {
                w(&self.nlink.to_le_bytes());
                w(&(target.len() as u32).to_le_bytes());
                w(target);
                if ext {
                    w(&self.xattr.to_le_bytes());
                }
            }
            Body::Dev { rdev } => {
                w(&self.nlink.to_le_bytes());
                w(&rdev.to_le_bytes());
                if ext {
                    w(&self.xattr.to_le_bytes());
                }
            }
            Body::Ipc => {
                w(&self.nlink.to_le_bytes());
                if ext {
                    w(&self.xattr.to_le_bytes());
                }
            }
        }
    }

    fn needs_extended(&self, index: &[IndexEntry]) -> bool {
        if self.extended || self.xattr != NO_XATTR {
            return true;
        }
        match &self.body {
            Body::Dir { file_size, .. } => !index.is_empty() || *file_size > 0xffff,
            Body::File {
                blocks_start,
                file_size,
                sparse,
                ..
            } => {
                *blocks_start > u64::from(u32::MAX)
                    || *file_size > u64::from(u32::MAX)
                    || *sparse != 0
                    || self.nlink != 1
            }
            // Basic symlink, device and ipc inodes do carry a link count.
            _ => false,
        }
    }
}
