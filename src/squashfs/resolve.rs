//! Paths inside an image resolved as the booted system resolves them: symlinks followed inside
//! the image, an absolute target restarting at the image's root (never the host's), and `..`
//! stopping at the root.
//!
//! One resolver for both sides of the promise that `check` reads what `inject` wrote: the engine
//! places a DEST whose directories are symlinks (a usrmerged `/sbin -> usr/sbin`) where `install`
//! into the unpacked tree would, and `check`'s [`super::View`] finds files the way the kernel
//! and the shell will after `switch_root`.

use super::image::{Image, NodeId};
use super::inode::{Body, Kind};

/// Symlinks followed in one lookup before giving up, as Linux does (MAXSYMLINKS).
pub const MAX_SYMLINKS: usize = 40;

/// Why a path does not lead to a file in the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// A component does not exist; `at` is the path that was looked for, symlinks resolved.
    #[error("{at} does not exist")]
    Missing { at: String },
    /// A component that must be a directory is not one.
    #[error("{at} is a {kind}, not a directory")]
    NotADirectory { at: String, kind: Kind },
    /// The path runs through more than [`MAX_SYMLINKS`] symlinks (a loop, usually).
    #[error("resolving it follows more than {MAX_SYMLINKS} symlinks (a symlink loop?)")]
    TooManySymlinks,
}

/// A symlink a lookup followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Where the link is, itself resolved: absolute and normalized.
    pub path: String,
    pub target: Vec<u8>,
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {}",
            self.path,
            String::from_utf8_lossy(&self.target)
        )
    }
}

impl Image {
    /// Finds `path` (absolute or relative to the root). Symlinks in the middle are always
    /// followed; the last component only when `follow_last`, as stat(2) and lstat(2). Returns
    /// the node and the path it was found at, symlinks resolved; every symlink followed is
    /// added to `links`, also when the lookup fails, so that messages can name them.
    pub(super) fn resolve(
        &self,
        path: &str,
        follow_last: bool,
        links: &mut Vec<Link>,
    ) -> Result<(NodeId, String), LookupError> {
        // The directories from the root down to where the walk is, with their names.
        let mut stack: Vec<(NodeId, Vec<u8>)> = Vec::new();
        let mut pending: Vec<Vec<u8>> = components(path.as_bytes());
        pending.reverse();
        let mut followed = 0;
        let here = |stack: &[(NodeId, Vec<u8>)]| stack.last().map_or(self.root, |s| s.0);
        while let Some(part) = pending.pop() {
            match part.as_slice() {
                b"." => continue,
                b".." => {
                    stack.pop();
                    continue;
                }
                _ => {}
            }
            let dir = &self.nodes[here(&stack)];
            if dir.inode.kind != Kind::Dir {
                return Err(LookupError::NotADirectory {
                    at: show(&stack),
                    kind: dir.inode.kind,
                });
            }
            let Ok(i) = dir
                .children
                .binary_search_by(|(name, _)| name.as_slice().cmp(&part))
            else {
                stack.push((self.root, part));
                return Err(LookupError::Missing { at: show(&stack) });
            };
            let child = dir.children[i].1;
            match &self.nodes[child].inode.body {
                Body::Symlink { target } if follow_last || !pending.is_empty() => {
                    followed += 1;
                    if followed > MAX_SYMLINKS {
                        return Err(LookupError::TooManySymlinks);
                    }
                    let mut at = stack.clone();
                    at.push((child, part));
                    links.push(Link {
                        path: show(&at),
                        target: target.clone(),
                    });
                    if target.first() == Some(&b'/') {
                        stack.clear();
                    }
                    let mut more = components(target);
                    more.reverse();
                    pending.extend(more);
                }
                _ => stack.push((child, part)),
            }
        }
        Ok((here(&stack), show(&stack)))
    }
}

/// The non-empty components of a path.
fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The path of a walk's stack, as text for messages.
fn show(stack: &[(NodeId, Vec<u8>)]) -> String {
    if stack.is_empty() {
        return "/".into();
    }
    stack
        .iter()
        .map(|(_, name)| format!("/{}", String::from_utf8_lossy(name)))
        .collect()
}
