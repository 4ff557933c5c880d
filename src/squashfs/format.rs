//! The squashfs 4.0 superblock and the constants of the on-disk format.
//!
//! Everything on disk is little-endian. The superblock is the only structure at a fixed place;
//! every table is found through it, so it is parsed and checked before anything else is read.

use super::error::Corruption;

/// "hsqs" read as a little-endian u32.
pub const MAGIC: u32 = 0x7371_7368;
/// Bytes in the superblock.
pub const SUPERBLOCK_SIZE: usize = 96;
/// Uncompressed bytes in one metadata block (inode, directory, id, fragment, export, xattr tables).
pub const METADATA_SIZE: usize = 8192;
/// A table pointer meaning "this table is absent".
pub const NOT_SET: u64 = u64::MAX;
/// The xattr index of an inode that has no extended attributes.
pub const NO_XATTR: u32 = u32::MAX;
/// The fragment index of a file whose tail is not in a fragment.
pub const NO_FRAGMENT: u32 = u32::MAX;
/// Set in a data block or fragment size when the block is stored uncompressed.
pub const DATA_UNCOMPRESSED: u32 = 1 << 24;
/// Set in a metadata block header when the block is stored uncompressed.
pub const METADATA_UNCOMPRESSED: u16 = 1 << 15;
/// Smallest and largest data block sizes the format allows.
pub const MIN_BLOCK_SIZE: u32 = 4096;
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;
/// Images are padded to a multiple of this, as mksquashfs does, so that they fill whole sectors
/// of a block device.
pub const PAD_TO: u64 = 4096;

/// Superblock flags (squashfs_fs.h), named for what they mean to a reader.
pub mod flags {
    pub const UNCOMPRESSED_INODES: u16 = 0x0001;
    pub const UNCOMPRESSED_DATA: u16 = 0x0002;
    pub const UNCOMPRESSED_FRAGMENTS: u16 = 0x0008;
    pub const NO_FRAGMENTS: u16 = 0x0010;
    pub const EXPORTABLE: u16 = 0x0080;
    pub const UNCOMPRESSED_XATTRS: u16 = 0x0100;
    pub const COMPRESSOR_OPTIONS: u16 = 0x0400;
    pub const UNCOMPRESSED_IDS: u16 = 0x0800;
    /// Every flag that asks for some table or the data to be stored uncompressed.
    pub const ANY_UNCOMPRESSED: u16 = UNCOMPRESSED_INODES
        | UNCOMPRESSED_DATA
        | UNCOMPRESSED_FRAGMENTS
        | UNCOMPRESSED_XATTRS
        | UNCOMPRESSED_IDS;
}

/// The superblock, field for field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuperBlock {
    pub inode_count: u32,
    /// The image's mkfs time (seconds since the epoch).
    pub mkfs_time: u32,
    pub block_size: u32,
    pub fragment_count: u32,
    pub compressor_id: u16,
    pub block_log: u16,
    pub flags: u16,
    pub id_count: u16,
    pub root_inode: u64,
    pub bytes_used: u64,
    pub id_table: u64,
    pub xattr_table: u64,
    pub inode_table: u64,
    pub directory_table: u64,
    pub fragment_table: u64,
    pub export_table: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Why a superblock could not be used; the caller adds the path.
#[derive(Debug)]
pub enum SuperBlockError {
    /// Not a squashfs image at all.
    BadMagic,
    /// A squashfs of another major/minor version (3.x images predate the 4.0 format).
    Version(u16, u16),
    /// A field that cannot be right.
    Corrupt(Corruption),
}

impl SuperBlock {
    /// Parses and checks a superblock against the size of the file it came from.
    pub fn parse(b: &[u8; SUPERBLOCK_SIZE], file_len: u64) -> Result<SuperBlock, SuperBlockError> {
        if u32_at(b, 0) != MAGIC {
            return Err(SuperBlockError::BadMagic);
        }
        let (major, minor) = (u16_at(b, 28), u16_at(b, 30));
        if (major, minor) != (4, 0) {
            return Err(SuperBlockError::Version(major, minor));
        }
        let sb = SuperBlock {
            inode_count: u32_at(b, 4),
            mkfs_time: u32_at(b, 8),
            block_size: u32_at(b, 12),
            fragment_count: u32_at(b, 16),
            compressor_id: u16_at(b, 20),
            block_log: u16_at(b, 22),
            flags: u16_at(b, 24),
            id_count: u16_at(b, 26),
            root_inode: u64_at(b, 32),
            bytes_used: u64_at(b, 40),
            id_table: u64_at(b, 48),
            xattr_table: u64_at(b, 56),
            inode_table: u64_at(b, 64),
            directory_table: u64_at(b, 72),
            fragment_table: u64_at(b, 80),
            export_table: u64_at(b, 88),
        };
        sb.check(file_len).map_err(SuperBlockError::Corrupt)?;
        Ok(sb)
    }

    fn check(&self, file_len: u64) -> Result<(), Corruption> {
        let bad = |what: String| Err(Corruption::new("superblock", 0, what));
        if !self.block_size.is_power_of_two()
            || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.block_size)
        {
            return bad(format!(
                "the block size {} is not a power of two between 4 KiB and 1 MiB",
                self.block_size
            ));
        }
        if 1u32 << self.block_log.min(31) != self.block_size {
            return bad(format!(
                "block_log {} does not match the block size {}",
                self.block_log, self.block_size
            ));
        }
        if self.bytes_used > file_len {
            return bad(format!(
                "the image claims {} bytes but the file has only {} (truncated?)",
                self.bytes_used, file_len
            ));
        }
        if self.inode_count == 0 || self.id_count == 0 {
            return bad("the inode or id count is zero".into());
        }
        let data_start = SUPERBLOCK_SIZE as u64;
        let ordered = [
            ("inode table", self.inode_table),
            ("directory table", self.directory_table),
        ];
        let mut last = data_start;
        for (name, at) in ordered {
            if at < last || at > self.bytes_used {
                return bad(format!("the {name} starts at {at}, outside the image"));
            }
            last = at;
        }
        for (name, at, optional) in [
            ("fragment table", self.fragment_table, true),
            ("export table", self.export_table, true),
            ("id table", self.id_table, false),
            ("xattr table", self.xattr_table, true),
        ] {
            if optional && at == NOT_SET {
                continue;
            }
            if at < self.directory_table || at > self.bytes_used {
                return bad(format!("the {name} starts at {at}, outside the image"));
            }
        }
        if self.inode_table >= self.directory_table {
            return bad("the inode table is empty".into());
        }
        let root_block = self.root_inode >> 16;
        if root_block >= self.directory_table - self.inode_table
            || (self.root_inode & 0xffff) as usize >= METADATA_SIZE
        {
            return bad(format!(
                "the root inode reference {:#x} is outside the inode table",
                self.root_inode
            ));
        }
        Ok(())
    }

    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.inode_count.to_le_bytes());
        b[8..12].copy_from_slice(&self.mkfs_time.to_le_bytes());
        b[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        b[16..20].copy_from_slice(&self.fragment_count.to_le_bytes());
        b[20..22].copy_from_slice(&self.compressor_id.to_le_bytes());
        b[22..24].copy_from_slice(&self.block_log.to_le_bytes());
        b[24..26].copy_from_slice(&self.flags.to_le_bytes());
        b[26..28].copy_from_slice(&self.id_count.to_le_bytes());
        b[28..30].copy_from_slice(&4u16.to_le_bytes());
        b[30..32].copy_from_slice(&0u16.to_le_bytes());
        for (at, v) in [
            (32, self.root_inode),
            (40, self.bytes_used),
            (48, self.id_table),
            (56, self.xattr_table),
            (64, self.inode_table),
            (72, self.directory_table),
            (80, self.fragment_table),
            (88, self.export_table),
        ] {
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// Little-endian field access over a byte slice whose length the caller has already checked.
pub(crate) mod le {
    pub fn u16(b: &[u8], at: usize) -> u16 {
        super::u16_at(b, at)
    }
    pub fn u32(b: &[u8], at: usize) -> u32 {
        super::u32_at(b, at)
    }
    pub fn u64(b: &[u8], at: usize) -> u64 {
        super::u64_at(b, at)
    }
}

/// Splits an inode or metadata reference into (block start relative to its table, offset in
/// the uncompressed block).
pub fn split_ref(r: u64) -> (u64, usize) {
    (r >> 16, (r & 0xffff) as usize)
}

pub fn make_ref(block: u64, offset: usize) -> u64 {
    (block << 16) | offset as u64
}
