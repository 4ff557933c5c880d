//! A small but real rootfs image built from nothing, so that `vxn-blobs demo` and the tests can
//! run on a machine without squashfs-tools.
//!
//! It holds what makes injection interesting: directories, files owned by a non-root group, a
//! symlink, a device node and an extended attribute, all of which must survive an injection.

use std::path::Path;

use super::codec::Codec;
use super::error::Error;
use super::format::{flags, NO_FRAGMENT, NO_XATTR};
use super::image::{Content, Image, Node};
use super::inode::{Body, Inode, Kind};
use super::metadata::Source;
use super::write_atomically;
use super::writer::{self, blank_superblock, Plan};
use super::xattr::{AttrSet, XattrTable};

const BLOCK_SIZE: u32 = 128 * 1024;
/// The xattr namespace code of "user.".
const XATTR_USER: u16 = 0;

/// One entry of the sample tree: (path, kind, mode, gid, content or symlink target, rdev).
struct Item {
    path: &'static str,
    kind: Kind,
    mode: u16,
    gid: u32,
    data: &'static [u8],
    rdev: u32,
}

const fn item(path: &'static str, kind: Kind, mode: u16, data: &'static [u8]) -> Item {
    Item {
        path,
        kind,
        mode,
        gid: 0,
        data,
        rdev: 0,
    }
}

fn tree() -> Vec<Item> {
    vec![
        item("/bin", Kind::Dir, 0o755, b""),
        item(
            "/bin/busybox",
            Kind::File,
            0o4755,
            // An ELF header and no program: like the real busybox, what /bin/sh leads to is a
            // binary, so the demo's init passes `check` (a script here would be a #! loop).
            b"\x7fELF\x02\x01\x01\0stand-in for busybox in the vxn-blobs demo rootfs, not a program\n",
        ),
        item("/bin/sh", Kind::Symlink, 0o777, b"busybox"),
        item("/dev", Kind::Dir, 0o755, b""),
        Item {
            // char 5:1, encoded as the kernel's new_encode_dev does.
            rdev: (1 & 0xff) | (5 << 8),
            ..item("/dev/console", Kind::CharDev, 0o600, b"")
        },
        item("/etc", Kind::Dir, 0o755, b""),
        item("/etc/hostname", Kind::File, 0o644, b"vxn-demo\n"),
        item(
            "/etc/os-release",
            Kind::File,
            0o644,
            b"ID=vxn-demo\nNAME=\"vxn-blobs demo rootfs\"\nVERSION_ID=1\n",
        ),
        Item {
            gid: 42,
            ..item("/etc/shadow", Kind::File, 0o640, b"root:*:19000:0:99999:7:::\n")
        },
        item("/sbin", Kind::Dir, 0o755, b""),
        // The vcontainer preinit refuses a rootfs without an executable /init or /sbin/init.
        item("/sbin/init", Kind::Symlink, 0o777, b"../bin/busybox"),
        item(
            "/vxn-init.sh",
            Kind::File,
            0o644,
            b"#!/bin/sh\n# an old init script that injection replaces\nexit 1\n",
        ),
    ]
}

/// Writes the sample rootfs (gzip, 128 KiB blocks) to `output`, atomically.
pub fn write_sample_image(output: &Path, mkfs_time: u32) -> Result<(), Error> {
    let codec = Codec::gzip_default();
    let items = tree();
    let ids = vec![0u32, 42];
    let count = items.len() as u32 + 1;
    let mut nodes: Vec<Node> = Vec::with_capacity(items.len() + 1);
    let mut paths: Vec<&str> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let body = match it.kind {
            Kind::Dir => Body::Dir {
                start_block: 0,
                offset: 0,
                file_size: 3,
                parent: 0,
            },
            Kind::File => Body::File {
                blocks_start: 0,
                file_size: 0,
                sparse: 0,
                fragment: NO_FRAGMENT,
                frag_offset: 0,
                blocks: Vec::new(),
            },
            Kind::Symlink => Body::Symlink {
                target: it.data.to_vec(),
            },
            Kind::BlockDev | Kind::CharDev => Body::Dev { rdev: it.rdev },
            Kind::Fifo | Kind::Socket => Body::Ipc,
        };
        nodes.push(Node {
            inode: Inode {
                kind: it.kind,
                extended: false,
                mode: it.mode,
                uid_idx: 0,
                gid_idx: ids.iter().position(|g| *g == it.gid).unwrap_or(0) as u16,
                mtime: mkfs_time,
                number: i as u32 + 1,
                nlink: if it.kind == Kind::Dir { 2 } else { 1 },
                // The setuid busybox carries a user xattr, to show attributes survive.
                xattr: if it.path == "/bin/busybox" {
                    0
                } else {
                    NO_XATTR
                },
                body,
            },
            children: Vec::new(),
            content: if it.kind == Kind::File {
                Content::Bytes(it.data.to_vec())
            } else {
                Content::Original
            },
            dropped: false,
            origin: None,
        });
        paths.push(it.path);
    }
    let root = nodes.len();
    nodes.push(Node {
        inode: Inode {
            kind: Kind::Dir,
            extended: false,
            mode: 0o755,
            uid_idx: 0,
            gid_idx: 0,
            mtime: mkfs_time,
            number: count,
            nlink: 2,
            xattr: NO_XATTR,
            body: Body::Dir {
                start_block: 0,
                offset: 0,
                file_size: 3,
                parent: count + 1,
            },
        },
        children: Vec::new(),
        content: Content::Original,
        dropped: false,
        origin: None,
    });
    // Link every item under its parent; the items are listed parents first, names sorted.
    for (i, path) in paths.iter().enumerate() {
        let (parent_path, name) = path.rsplit_once('/').unwrap_or(("", path));
        let parent = if parent_path.is_empty() {
            root
        } else {
            paths.iter().position(|p| *p == parent_path).unwrap_or(root)
        };
        nodes[parent].children.push((name.as_bytes().to_vec(), i));
        if nodes[i].inode.kind == Kind::Dir {
            nodes[parent].inode.nlink += 1;
            let parent_number = nodes[parent].inode.number;
            if let Body::Dir { parent: p, .. } = &mut nodes[i].inode.body {
                *p = parent_number;
            }
        }
    }
    for n in &mut nodes {
        n.children.sort();
    }

    let mut kv = Vec::new();
    let (name, value) = (b"vxn.demo".as_slice(), b"kept across injection".as_slice());
    kv.extend_from_slice(&XATTR_USER.to_le_bytes());
    kv.extend_from_slice(&(name.len() as u16).to_le_bytes());
    kv.extend_from_slice(name);
    kv.extend_from_slice(&(value.len() as u32).to_le_bytes());
    kv.extend_from_slice(value);
    let xattrs = XattrTable {
        kv,
        sets: vec![AttrSet {
            pos: 0,
            count: 1,
            size: ("user.".len() + name.len() + value.len()) as u32,
        }],
        out_of_line: Vec::new(),
    };

    let mut sb = blank_superblock(BLOCK_SIZE, &codec, mkfs_time);
    sb.inode_count = count;
    let mut img = Image {
        src: Source::empty("<built-in sample>"),
        sb,
        codec: codec.clone(),
        data_start: super::format::SUPERBLOCK_SIZE as u64,
        nodes,
        root,
        ids,
        fragments: Vec::new(),
        xattrs: Some(xattrs),
        inode_stream: Vec::new(),
    };
    let plan = Plan {
        codec,
        keep_raw: true,
        flags: flags::NO_FRAGMENTS | flags::EXPORTABLE,
        mkfs_time,
        jobs: 1,
    };
    write_atomically(output, |file, tmp| {
        writer::write(
            &mut img,
            &plan,
            file,
            tmp,
            &mut writer::Reuse::default(),
            &mut |_, _| {},
        )?;
        Image::open(tmp).map(|_| ())
    })
}
