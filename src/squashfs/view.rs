//! A read-only view of an image as a booted system sees it: paths resolved through symlinks
//! inside the image (by the resolver the engine places injected files with), and a file's
//! leading bytes read without reading the rest.
//!
//! `check` needs both to tell whether an init script, its interpreter and the files it sources
//! exist where the kernel and the shell will look for them after `switch_root`. The image is
//! opened with the engine's full checks, and every read here is bounded: symlink chains stop at
//! the kernel's limit, and reads stop at the caller's limit whatever size an inode claims.

use std::path::Path;

use super::error::Error;
use super::format::{DATA_UNCOMPRESSED, NO_FRAGMENT};
use super::image::{Image, NodeId};
use super::inode::{Body, Kind};
use super::resolve::LookupError;

/// An image opened for lookups and reads.
pub struct View {
    img: Image,
}

/// A file in the image, found by [`View::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path it was found at once symlinks were followed: absolute and normalized.
    pub path: String,
    pub kind: Kind,
    /// Permission bits (07777).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    /// Bytes of a regular file; length of a symlink's target.
    pub size: u64,
    /// A symlink's target, when the last component was not followed.
    pub target: Option<Vec<u8>>,
    id: NodeId,
}

impl View {
    /// Opens the image at `path` with every check the engine applies to an input.
    pub fn open(path: &Path) -> Result<View, Error> {
        Ok(View {
            img: Image::open(path)?,
        })
    }

    /// [`View::open`] of `path`, with errors naming `shown` instead: a file staged under a
    /// temporary name is reported under the name it is about to get.
    pub fn open_as(path: &Path, shown: &Path) -> Result<View, Error> {
        View::open(path).map_err(|e| e.naming(shown))
    }

    pub fn inode_count(&self) -> u32 {
        self.img.sb.inode_count
    }

    pub fn compressor_name(&self) -> &'static str {
        self.img.compressor_name()
    }

    /// Finds `path` (absolute or relative to the root) inside the image. Symlinks in the middle
    /// are always followed; the last component only when `follow_last`, as stat(2) and lstat(2).
    pub fn lookup(&self, path: &str, follow_last: bool) -> Result<Entry, LookupError> {
        let (id, path) = self.img.resolve(path, follow_last, &mut Vec::new())?;
        let inode = &self.img.nodes[id].inode;
        let owner = |i: u16| self.img.ids.get(usize::from(i)).copied().unwrap_or(0);
        let (size, target) = match &inode.body {
            Body::File { file_size, .. } => (*file_size, None),
            Body::Symlink { target } => (target.len() as u64, Some(target.clone())),
            _ => (0, None),
        };
        Ok(Entry {
            path,
            kind: inode.kind,
            mode: inode.mode & 0o7777,
            uid: owner(inode.uid_idx),
            gid: owner(inode.gid_idx),
            size,
            target,
            id,
        })
    }

    /// The first `limit` bytes of a regular file (all of it when shorter). Only the blocks that
    /// hold those bytes are read and decompressed; anything but a regular file reads as empty.
    pub fn read(&self, entry: &Entry, limit: usize) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.img.file_pieces(entry.id, limit as u64, &mut |piece| {
            out.extend_from_slice(piece)
        })?;
        Ok(out)
    }
}

impl Image {
    /// Hands the bytes of regular file `id`, up to `limit`, to `piece` in order, a block at a
    /// time, so that memory stays bounded by the block size whatever size the file claims.
    /// Anything but a regular file has no bytes.
    pub(super) fn file_pieces(
        &self,
        id: NodeId,
        limit: u64,
        piece: &mut dyn FnMut(&[u8]),
    ) -> Result<(), Error> {
        let Body::File {
            blocks_start,
            file_size,
            fragment,
            frag_offset,
            blocks,
            ..
        } = &self.nodes[id].inode.body
        else {
            return Ok(());
        };
        let wanted = (*file_size).min(limit);
        let bs = self.sb.block_size as usize;
        let mut zeros = Vec::new();
        let mut done = 0u64;
        let mut pos = *blocks_start;
        for field in blocks {
            if done >= wanted {
                return Ok(());
            }
            let take = (wanted - done).min(bs as u64) as usize;
            let size = field & !DATA_UNCOMPRESSED;
            if size == 0 {
                // A sparse block: zeros, stored as nothing.
                zeros.resize(take, 0);
                piece(&zeros[..take]);
            } else {
                let data = self.read_block(pos, *field, take)?;
                piece(data.get(..take).ok_or_else(|| {
                    self.src
                        .corrupt("data", pos, "a data block is shorter than its file needs")
                })?);
                pos += u64::from(size);
            }
            done += take as u64;
        }
        if done < wanted && *fragment != NO_FRAGMENT {
            let frag = self.fragments[*fragment as usize];
            let data = self.read_block(frag.start, frag.size, bs)?;
            let start = *frag_offset as usize;
            let tail = (wanted - done) as usize;
            piece(data.get(start..start + tail).ok_or_else(|| {
                self.src.corrupt(
                    "fragment",
                    frag.start,
                    "a file's tail lies outside its fragment",
                )
            })?);
        }
        Ok(())
    }
}

impl Error {
    /// The same error about the file at `shown`.
    fn naming(self, shown: &Path) -> Error {
        let path = shown.to_path_buf();
        match self {
            Error::Io { action, source, .. } => Error::Io {
                action,
                path,
                source,
            },
            Error::NotSquashfs { .. } => Error::NotSquashfs { path },
            Error::Version { major, minor, .. } => Error::Version { path, major, minor },
            Error::Unsupported { what, .. } => Error::Unsupported { path, what },
            Error::Corrupt { corruption, .. } => Error::Corrupt { path, corruption },
            Error::Destination { dest, why, .. } => Error::Destination {
                image: path,
                dest,
                why,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (tempfile::TempDir, View) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sample.img");
        super::super::write_sample_image(&path, 1).unwrap();
        let view = View::open(&path).unwrap();
        (dir, view)
    }

    #[test]
    fn symlinks_resolve_inside_the_image() {
        let (_dir, view) = sample();
        let sh = view.lookup("/bin/sh", true).unwrap();
        assert_eq!((sh.path.as_str(), sh.kind), ("/bin/busybox", Kind::File));
        let link = view.lookup("/bin/sh", false).unwrap();
        assert_eq!(link.kind, Kind::Symlink);
        assert_eq!(link.target.as_deref(), Some(&b"busybox"[..]));
        // ".." at the root stays at the root, as in the kernel.
        let up = view.lookup("/../../etc/./hostname", true).unwrap();
        assert_eq!(up.path, "/etc/hostname");
        assert_eq!(view.read(&up, 100).unwrap(), b"vxn-demo\n");
    }

    #[test]
    fn lookups_say_what_is_missing() {
        let (_dir, view) = sample();
        assert_eq!(
            view.lookup("/bin/bash", true),
            Err(LookupError::Missing {
                at: "/bin/bash".into()
            })
        );
        assert!(matches!(
            view.lookup("/etc/hostname/x", true),
            Err(LookupError::NotADirectory { .. })
        ));
    }

    #[test]
    fn reads_stop_at_the_limit() {
        let (_dir, view) = sample();
        let entry = view.lookup("/etc/os-release", true).unwrap();
        assert_eq!(view.read(&entry, 3).unwrap(), b"ID=");
        let all = view.read(&entry, usize::MAX).unwrap();
        assert_eq!(all.len() as u64, entry.size);
    }
}
