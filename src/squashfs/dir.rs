//! Directory listings: runs of entries under headers that share an inode block, plus the index
//! that lets the kernel jump into the middle of a long listing.
//!
//! Encoding follows mksquashfs' rules exactly (a new header every 256 entries, on a change of
//! inode block, when the inode number delta leaves i16, and every 8 KiB of listing, which is
//! also where an index entry goes), so a directory the injection leaves alone is encoded to
//! the same bytes it had, and the kernel's indexed lookups keep working in the ones it changes.

use super::format::{le, METADATA_SIZE};
use super::inode::Kind;

const HEADER_SIZE: usize = 12;
const ENTRY_SIZE: usize = 8;
/// Entries under one header, at most.
const MAX_RUN: usize = 256;

/// One name in a directory, as read from the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    pub name: Vec<u8>,
    pub kind: Kind,
    /// Reference of the inode: block (relative to the inode table) and offset.
    pub inode_block: u32,
    pub inode_offset: u16,
    pub number: u32,
}

/// Parses `len` bytes of listing starting at `pos` of the directory table stream.
pub fn parse_listing(data: &[u8], pos: usize, len: usize) -> Result<Vec<RawEntry>, String> {
    let end = pos
        .checked_add(len)
        .filter(|e| *e <= data.len())
        .ok_or("the listing runs past the end of the directory table")?;
    let mut at = pos;
    let mut entries: Vec<RawEntry> = Vec::new();
    while at < end {
        if end - at < HEADER_SIZE {
            return Err("a directory header is cut short".into());
        }
        let count = le::u32(data, at) as usize + 1;
        let start = le::u32(data, at + 4);
        let base = le::u32(data, at + 8);
        at += HEADER_SIZE;
        if count > MAX_RUN {
            return Err(format!(
                "a directory header claims {count} entries (256 at most)"
            ));
        }
        for _ in 0..count {
            if end - at < ENTRY_SIZE {
                return Err("a directory entry is cut short".into());
            }
            let offset = le::u16(data, at);
            let delta = le::u16(data, at + 2) as i16;
            let code = le::u16(data, at + 4);
            let name_len = le::u16(data, at + 6) as usize + 1;
            at += ENTRY_SIZE;
            if end - at < name_len || name_len > 256 {
                return Err("a directory entry's name runs past the listing".into());
            }
            let name = data[at..at + name_len].to_vec();
            at += name_len;
            check_name(&name)?;
            if let Some(prev) = entries.last() {
                if prev.name >= name {
                    return Err(format!(
                        "the names {:?} and {:?} are not in sorted order (or repeat)",
                        String::from_utf8_lossy(&prev.name),
                        String::from_utf8_lossy(&name)
                    ));
                }
            }
            let kind = Kind::from_dir_entry(code)
                .ok_or_else(|| format!("a directory entry has the unknown type {code}"))?;
            let number = i64::from(base) + i64::from(delta);
            let number = u32::try_from(number)
                .map_err(|_| "a directory entry's inode number is out of range".to_string())?;
            entries.push(RawEntry {
                name,
                kind,
                inode_block: start,
                inode_offset: offset,
                number,
            });
        }
    }
    Ok(entries)
}

/// Names that would let an extractor write outside its target, or that no filesystem allows.
fn check_name(name: &[u8]) -> Result<(), String> {
    if name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(format!(
            "a directory entry has the invalid name {:?}",
            String::from_utf8_lossy(name)
        ));
    }
    Ok(())
}

/// What an entry needs for encoding: its inode's new reference and number.
pub struct OutEntry<'a> {
    pub name: &'a [u8],
    pub kind: Kind,
    pub inode_block: u32,
    pub inode_offset: u16,
    pub number: u32,
}

/// An index entry before its directory-table block is known: a header's offset in the listing
/// and the first name under it.
pub struct PendingIndex {
    pub index: u32,
    pub name: Vec<u8>,
}

/// Encodes a listing of entries sorted by name.
pub fn encode_listing(entries: &[OutEntry<'_>]) -> (Vec<u8>, Vec<PendingIndex>) {
    let mut out: Vec<u8> = Vec::new();
    let mut index = Vec::new();
    let mut header_at: Option<usize> = None;
    let mut run = MAX_RUN;
    let mut run_block = 0u32;
    let mut base = 0u32;
    let mut indexed_at = 0usize;
    for e in entries {
        let size = e.name.len();
        let delta = i64::from(e.number) - i64::from(base);
        let crosses =
            header_at.is_some() && out.len() + ENTRY_SIZE + size - indexed_at > METADATA_SIZE;
        if run == MAX_RUN
            || e.inode_block != run_block
            || crosses
            || !(-32768..=32767).contains(&delta)
        {
            if let Some(h) = header_at {
                out[h..h + 4].copy_from_slice(&(run as u32 - 1).to_le_bytes());
            }
            if crosses {
                index.push(PendingIndex {
                    index: out.len() as u32,
                    name: e.name.to_vec(),
                });
                indexed_at = out.len();
            }
            header_at = Some(out.len());
            out.extend_from_slice(&[0u8; 4]);
            out.extend_from_slice(&e.inode_block.to_le_bytes());
            out.extend_from_slice(&e.number.to_le_bytes());
            run = 0;
            run_block = e.inode_block;
            base = e.number;
        }
        out.extend_from_slice(&e.inode_offset.to_le_bytes());
        out.extend_from_slice(&((i64::from(e.number) - i64::from(base)) as i16).to_le_bytes());
        out.extend_from_slice(&e.kind.basic_code().to_le_bytes());
        out.extend_from_slice(&((size - 1) as u16).to_le_bytes());
        out.extend_from_slice(e.name);
        run += 1;
    }
    if let Some(h) = header_at {
        out[h..h + 4].copy_from_slice(&(run as u32 - 1).to_le_bytes());
    }
    (out, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("entry-with-a-long-name-{i:06}").into_bytes())
            .collect()
    }

    #[test]
    fn listing_round_trips_with_runs_and_index() {
        let names = names(2000);
        let entries: Vec<OutEntry<'_>> = names
            .iter()
            .enumerate()
            .map(|(i, n)| OutEntry {
                name: n,
                kind: Kind::File,
                // A new inode block every 100 entries forces new headers.
                inode_block: (i / 100) as u32 * 8000,
                inode_offset: (i % 100) as u16 * 32,
                number: i as u32 + 1,
            })
            .collect();
        let (bytes, index) = encode_listing(&entries);
        // ~64 KiB of listing: an index entry every 8 KiB, each at a header naming its first entry.
        assert_eq!(index.len(), bytes.len() / METADATA_SIZE);
        for ix in &index {
            let at = ix.index as usize;
            let first_name_len = le::u16(&bytes, at + HEADER_SIZE + 6) as usize + 1;
            let name = &bytes[at + HEADER_SIZE + ENTRY_SIZE..][..first_name_len];
            assert_eq!(name, ix.name.as_slice());
        }
        let back = parse_listing(&bytes, 0, bytes.len()).unwrap();
        assert_eq!(back.len(), entries.len());
        for (b, e) in back.iter().zip(&entries) {
            assert_eq!(
                (b.name.as_slice(), b.number, b.inode_block, b.inode_offset),
                (e.name, e.number, e.inode_block, e.inode_offset)
            );
        }
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in [&b".."[..], b".", b"a/b", b"nul\0"] {
            let e = [OutEntry {
                name: bad,
                kind: Kind::File,
                inode_block: 0,
                inode_offset: 0,
                number: 1,
            }];
            let (bytes, _) = encode_listing(&e);
            assert!(
                parse_listing(&bytes, 0, bytes.len()).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
