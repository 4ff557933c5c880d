//! Checks of the tiny initramfs: one complete gzip stream holding a newc cpio archive.
//!
//! The seed copied whatever file sat at the initramfs path; a truncated download or a wrong file
//! only showed up as a DomU that never reached its preinit. The check reads the whole archive as
//! a stream (never holding it in memory), bounds how much it will decompress so a gzip bomb ends
//! in an error instead of filling the disk or memory, and walks the cpio headers up to their
//! `TRAILER!!!` the way the kernel's initramfs unpacker does.

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Decompressed bytes the check reads at most. A tiny initramfs (busybox and a preinit) is a few
/// MiB; a bound far above that still stops a gzip bomb long before it hurts.
pub const MAX_DECOMPRESSED_BYTES: u64 = 512 << 20;

/// Length of a newc header: the 6-byte magic and thirteen 8-digit hex fields.
const NEWC_HEADER_LEN: usize = 110;
/// newc magic without and with the (unused by the kernel) data checksum.
const NEWC_MAGICS: [&[u8; 6]; 2] = [b"070701", b"070702"];
/// Name of the entry that ends a cpio archive.
const TRAILER: &[u8] = b"TRAILER!!!";
/// Longest name a header may claim; PATH_MAX on Linux, as the kernel's unpacker enforces.
const MAX_NAME_LEN: u64 = 4096;

/// What the check learnt about a valid initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Entries before the trailer.
    pub entries: u64,
    /// Whether an `init` (or `./init`) entry exists at the archive's root: the kernel runs it.
    pub has_init: bool,
    /// The full `st_mode` (type and permission bits) of the last `init` entry at the root, which
    /// is the one the kernel's unpacker leaves in place; `None` without one.
    pub init_mode: Option<u32>,
    /// Size of the cpio data after decompression.
    pub decompressed_bytes: u64,
}

/// Why an initramfs was rejected.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the file itself failed.
    #[error("cannot read initramfs {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file does not start with the gzip magic.
    #[error("initramfs {} is not gzip-compressed (it does not start with 1f 8b); give the .cpio.gz that the image build deploys", path.display())]
    NotGzip { path: PathBuf },
    /// The gzip stream is damaged or cut short.
    #[error("initramfs {} is not a complete gzip stream ({detail}); the file is truncated or damaged, rebuild it", path.display())]
    Gzip { path: PathBuf, detail: String },
    /// Something other than zero padding follows the gzip stream.
    #[error("initramfs {} has data after its gzip stream (at byte {offset}); expected exactly one gzip stream", path.display())]
    TrailingData { path: PathBuf, offset: u64 },
    /// Decompression went past [`MAX_DECOMPRESSED_BYTES`].
    #[error("initramfs {} decompresses to more than {} MiB, which no tiny initramfs does (a gzip bomb?)", path.display(), limit >> 20)]
    TooLarge { path: PathBuf, limit: u64 },
    /// The decompressed data is not a newc cpio archive.
    #[error("initramfs {} does not hold a newc cpio archive: expected magic 070701 or 070702 at offset {offset} of the decompressed data, found {found}; the image build must use IMAGE_FSTYPES cpio.gz", path.display())]
    NotCpio {
        path: PathBuf,
        offset: u64,
        found: String,
    },
    /// A header or name inside the archive is malformed.
    #[error("initramfs {} holds a damaged cpio archive: {what} (at offset {offset} of the decompressed data)", path.display())]
    BadCpio {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    /// The archive ends before its trailer entry.
    #[error("initramfs {} holds a cpio archive that ends before its TRAILER!!! entry (at offset {offset} of the decompressed data); the file is truncated, rebuild it", path.display())]
    NoTrailer { path: PathBuf, offset: u64 },
    /// Non-zero bytes follow the trailer inside the gzip stream.
    #[error("initramfs {} has data after the cpio trailer (at offset {offset} of the decompressed data); concatenated archives are not supported", path.display())]
    AfterTrailer { path: PathBuf, offset: u64 },
}

/// Checks the initramfs file at `path`.
pub fn check_file(path: &Path) -> Result<Summary, Error> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    check(file, path)
}

/// Checks an initramfs read from `reader`; `path` only names it in errors.
///
/// The whole input is consumed, so a caller that copies while reading (see `assemble`) has copied
/// exactly the bytes that were checked.
pub fn check<R: Read>(reader: R, path: &Path) -> Result<Summary, Error> {
    check_with_limit(reader, path, MAX_DECOMPRESSED_BYTES)
}

/// [`check`] with another bound on the decompressed size (tests use a small one).
fn check_with_limit<R: Read>(reader: R, path: &Path, limit: u64) -> Result<Summary, Error> {
    let mut input = BufReader::with_capacity(1 << 16, CountingReader::new(reader));
    let head = input.fill_buf().map_err(|e| io_error(path, e))?;
    if head.first() != Some(&0x1f) || (head.len() > 1 && head[1] != 0x8b) || head.len() < 2 {
        return Err(Error::NotGzip {
            path: path.to_path_buf(),
        });
    }
    let decoder = flate2::bufread::GzDecoder::new(input);
    let mut cpio = Stream {
        inner: decoder,
        offset: 0,
        limit,
        path,
    };
    let summary = walk_cpio(&mut cpio)?;
    // Everything up to the end of the gzip member: zero padding only (cpio pads to 512 bytes),
    // and reaching the end verifies the gzip CRC and length.
    let mut buf = [0u8; 1 << 14];
    loop {
        let at = cpio.offset;
        let n = cpio.read_some(&mut buf)?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().position(|&b| b != 0) {
            return Err(Error::AfterTrailer {
                path: path.to_path_buf(),
                offset: at + i as u64,
            });
        }
    }
    let decompressed_bytes = cpio.offset;
    // After the member: nothing but zero padding, which the kernel also skips.
    let mut rest = cpio.inner.into_inner();
    let member_end = rest.get_ref().count - rest.buffer().len() as u64;
    let mut pos = member_end;
    loop {
        let chunk = rest.fill_buf().map_err(|e| io_error(path, e))?;
        if chunk.is_empty() {
            break;
        }
        if let Some(i) = chunk.iter().position(|&b| b != 0) {
            return Err(Error::TrailingData {
                path: path.to_path_buf(),
                offset: pos + i as u64,
            });
        }
        let n = chunk.len();
        pos += n as u64;
        rest.consume(n);
    }
    Ok(Summary {
        decompressed_bytes,
        ..summary
    })
}

fn io_error(path: &Path, source: io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Counts the compressed bytes read, to report where trailing data starts.
struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R> CountingReader<R> {
    fn new(inner: R) -> Self {
        Self { inner, count: 0 }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// The decompressed stream, with its offset and the bound on its size.
struct Stream<'p, R> {
    inner: flate2::bufread::GzDecoder<BufReader<CountingReader<R>>>,
    offset: u64,
    /// Decompressed bytes allowed; see [`MAX_DECOMPRESSED_BYTES`].
    limit: u64,
    path: &'p Path,
}

impl<R: Read> Stream<'_, R> {
    /// One read; 0 only at the end of the gzip member.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        loop {
            match self.inner.read(buf) {
                Ok(n) => {
                    self.offset += n as u64;
                    if self.offset > self.limit {
                        return Err(Error::TooLarge {
                            path: self.path.to_path_buf(),
                            limit: self.limit,
                        });
                    }
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.gzip_error(e)),
            }
        }
    }

    /// Fills `buf` as far as the stream goes; returns how much it filled.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.read_some(&mut buf[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok(filled)
    }

    /// Skips `len` bytes; false when the stream ended first.
    fn skip(&mut self, mut len: u64) -> Result<bool, Error> {
        let mut buf = [0u8; 1 << 14];
        while len > 0 {
            let want = len.min(buf.len() as u64) as usize;
            let n = self.read_some(&mut buf[..want])?;
            if n == 0 {
                return Ok(false);
            }
            len -= n as u64;
        }
        Ok(true)
    }

    /// Errors from the decoder are damage in the gzip data, except real I/O failures underneath.
    fn gzip_error(&self, e: io::Error) -> Error {
        match e.kind() {
            io::ErrorKind::InvalidInput
            | io::ErrorKind::InvalidData
            | io::ErrorKind::UnexpectedEof => Error::Gzip {
                path: self.path.to_path_buf(),
                detail: if e.kind() == io::ErrorKind::UnexpectedEof {
                    "it ends early".into()
                } else {
                    e.to_string()
                },
            },
            _ => io_error(self.path, e),
        }
    }
}

/// Bytes needed after `len` to reach the next multiple of four (newc alignment).
fn pad4(len: u64) -> u64 {
    (4 - len % 4) % 4
}

/// Walks newc headers up to and including the trailer.
fn walk_cpio<R: Read>(cpio: &mut Stream<'_, R>) -> Result<Summary, Error> {
    let path = cpio.path;
    let mut summary = Summary {
        entries: 0,
        has_init: false,
        init_mode: None,
        decompressed_bytes: 0,
    };
    loop {
        let start = cpio.offset;
        let mut header = [0u8; NEWC_HEADER_LEN];
        let got = cpio.read_full(&mut header)?;
        if got >= 6 && !NEWC_MAGICS.iter().any(|m| header[..6] == m[..]) || got < 6 && got > 0 {
            return Err(Error::NotCpio {
                path: path.to_path_buf(),
                offset: start,
                found: describe(&header[..got.min(6)]),
            });
        }
        if got == 0 && summary.entries == 0 {
            return Err(Error::NotCpio {
                path: path.to_path_buf(),
                offset: start,
                found: "no data (the archive is empty)".into(),
            });
        }
        if got < NEWC_HEADER_LEN {
            return Err(Error::NoTrailer {
                path: path.to_path_buf(),
                offset: start,
            });
        }
        let field = |index: usize| -> Result<u64, Error> {
            let at = 6 + index * 8;
            let text = std::str::from_utf8(&header[at..at + 8]).ok();
            text.and_then(|t| u64::from_str_radix(t, 16).ok())
                .ok_or_else(|| Error::BadCpio {
                    path: path.to_path_buf(),
                    offset: start + at as u64,
                    what: format!(
                        "header field {} is {}, not 8 hexadecimal digits",
                        index,
                        describe(&header[at..at + 8])
                    ),
                })
        };
        let mode = field(1)?;
        let file_size = field(6)?;
        let name_size = field(11)?;
        if name_size == 0 || name_size > MAX_NAME_LEN {
            return Err(Error::BadCpio {
                path: path.to_path_buf(),
                offset: start,
                what: format!("an entry claims a name of {name_size} bytes"),
            });
        }
        let mut name = vec![0u8; name_size as usize];
        if cpio.read_full(&mut name)? < name.len() {
            return Err(Error::NoTrailer {
                path: path.to_path_buf(),
                offset: start,
            });
        }
        if name.pop() != Some(0) || name.contains(&0) {
            return Err(Error::BadCpio {
                path: path.to_path_buf(),
                offset: start + NEWC_HEADER_LEN as u64,
                what: "an entry name is not a single NUL-terminated string".into(),
            });
        }
        let name_pad = pad4(NEWC_HEADER_LEN as u64 + name_size);
        if !cpio.skip(name_pad)? {
            return Err(Error::NoTrailer {
                path: path.to_path_buf(),
                offset: start,
            });
        }
        if name == TRAILER {
            return Ok(summary);
        }
        if !cpio.skip(file_size)? || !cpio.skip(pad4(file_size))? {
            return Err(Error::NoTrailer {
                path: path.to_path_buf(),
                offset: start,
            });
        }
        summary.entries += 1;
        let stripped = name
            .strip_prefix(b"./")
            .or_else(|| name.strip_prefix(b"/"))
            .unwrap_or(&name);
        // S_IFREG or S_IFLNK: either can be what the kernel executes as /init.
        let kind = mode & 0o170000;
        if stripped == b"init" {
            summary.init_mode = Some(mode as u32);
            if kind == 0o100000 || kind == 0o120000 {
                summary.has_init = true;
            }
        }
    }
}

/// Shows bytes found where a magic was expected.
fn describe(bytes: &[u8]) -> String {
    if !bytes.is_empty() && bytes.iter().all(|&b| b.is_ascii_graphic() || b == b' ') {
        format!("\"{}\"", String::from_utf8_lossy(bytes))
    } else {
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn newc_entry(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
        let fields = [
            1,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }

    fn archive(with_init: bool) -> Vec<u8> {
        let mut cpio = Vec::new();
        newc_entry(&mut cpio, "bin", 0o40755, b"");
        if with_init {
            newc_entry(&mut cpio, "init", 0o100755, b"#!/bin/sh\nexec /bin/sh\n");
        }
        newc_entry(&mut cpio, "TRAILER!!!", 0, b"");
        cpio.resize(512, 0);
        cpio
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn run(bytes: &[u8]) -> Result<Summary, Error> {
        check(bytes, Path::new("/x/initramfs.cpio.gz"))
    }

    #[test]
    fn accepts_a_gzip_newc_archive_and_finds_init() {
        let s = run(&gzip(&archive(true))).unwrap();
        assert_eq!(s.entries, 2);
        assert!(s.has_init);
        assert_eq!(s.init_mode, Some(0o100755));
        assert_eq!(s.decompressed_bytes, 512);
        let without = run(&gzip(&archive(false))).unwrap();
        assert!(!without.has_init);
        assert_eq!(without.init_mode, None);
    }

    #[test]
    fn accepts_the_checksummed_newc_variant() {
        let mut cpio = archive(true);
        let (mut at, mut rewritten) = (0, 0);
        // Rewrite every header's magic to 070702, walking the entries as the checker does.
        while at + NEWC_HEADER_LEN <= cpio.len() && &cpio[at..at + 6] == b"070701" {
            cpio[at + 5] = b'2';
            rewritten += 1;
            let hex = |i: usize| {
                let f = &cpio[at + 6 + i * 8..at + 14 + i * 8];
                u64::from_str_radix(std::str::from_utf8(f).unwrap(), 16).unwrap()
            };
            let (size, name) = (hex(6), hex(11));
            let data = at as u64 + NEWC_HEADER_LEN as u64 + name;
            let data = data + pad4(data);
            at = (data + size + pad4(data + size)) as usize;
        }
        assert_eq!(rewritten, 3);
        let s = run(&gzip(&cpio)).unwrap();
        assert_eq!(s.entries, 2);
    }

    #[test]
    fn accepts_zero_padding_after_the_gzip_stream() {
        let mut bytes = gzip(&archive(true));
        bytes.extend_from_slice(&[0; 100]);
        run(&bytes).unwrap();
    }

    #[test]
    fn rejects_truncation_at_every_offset() {
        let bytes = gzip(&archive(true));
        for cut in 0..bytes.len() {
            let err = run(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, Error::NotGzip { .. } | Error::Gzip { .. }),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn rejects_a_second_gzip_member() {
        let mut bytes = gzip(&archive(true));
        bytes.extend_from_slice(&gzip(b"more"));
        assert!(matches!(
            run(&bytes).unwrap_err(),
            Error::TrailingData { .. }
        ));
    }

    #[test]
    fn rejects_gzip_that_is_not_cpio() {
        let err = run(&gzip(b"hello world, this is not an archive")).unwrap_err();
        assert!(matches!(err, Error::NotCpio { offset: 0, .. }), "{err}");
        assert!(err.to_string().contains("found \"hello \""), "{err}");
        assert!(matches!(
            run(&gzip(b"")).unwrap_err(),
            Error::NotCpio { .. }
        ));
    }

    #[test]
    fn rejects_an_archive_without_trailer() {
        let mut cpio = Vec::new();
        newc_entry(&mut cpio, "init", 0o100755, b"x");
        let err = run(&gzip(&cpio)).unwrap_err();
        assert!(matches!(err, Error::NoTrailer { .. }), "{err}");
    }

    #[test]
    fn rejects_data_after_the_trailer() {
        let mut cpio = archive(true);
        cpio.extend_from_slice(b"junk");
        let err = run(&gzip(&cpio)).unwrap_err();
        assert!(
            matches!(err, Error::AfterTrailer { offset: 512, .. }),
            "{err}"
        );
    }

    #[test]
    fn rejects_a_non_hex_header_field() {
        let mut cpio = archive(true);
        cpio[6 + 6 * 8] = b'z';
        let err = run(&gzip(&cpio)).unwrap_err();
        assert!(matches!(err, Error::BadCpio { .. }), "{err}");
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_bound() {
        let mut head = Vec::new();
        newc_entry(&mut head, "big", 0o100644, b"");
        // Claim a huge file so the walker skips through the zeros as data.
        head[6 + 6 * 8..6 + 7 * 8].copy_from_slice(b"ffffffff");
        head.resize(8 << 20, 0);
        let bytes = gzip(&head);
        let err = check_with_limit(&bytes[..], Path::new("/b.cpio.gz"), 4 << 20).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("more than 4 MiB"), "{err}");
    }

    #[test]
    fn not_gzip_names_the_path() {
        let err = run(b"070701...").unwrap_err();
        assert!(matches!(err, Error::NotGzip { .. }));
        assert!(err.to_string().contains("/x/initramfs.cpio.gz"));
    }
}
