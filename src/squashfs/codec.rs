//! The block compressors a squashfs image may use, with their on-disk options.
//!
//! squashfs compresses each data block and each 8 KiB metadata block on its own, so a codec is
//! a pair of whole-buffer functions. Decompression is always bounded by the size the format
//! allows for the block, so a hostile block cannot make the tool allocate without limit.

use std::io::Write;

/// Compressor ids of the superblock.
pub const GZIP: u16 = 1;
pub const LZMA: u16 = 2;
pub const LZO: u16 = 3;
pub const XZ: u16 = 4;
pub const LZ4: u16 = 5;
pub const ZSTD: u16 = 6;

/// mksquashfs' defaults, used when an image carries no compressor options.
const GZIP_DEFAULT_LEVEL: u32 = 9;
const ZSTD_DEFAULT_LEVEL: i32 = 15;
/// liblzma's default preset; mksquashfs uses it with the dictionary set to the block size.
const XZ_PRESET: u32 = 6;
const LZ4_HC_FLAG: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Gzip { level: u32 },
    Xz { dict_size: u32 },
    Lz4 { high_compression: bool },
    Zstd { level: i32 },
}

/// A compressor configured as an image asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    kind: Kind,
    /// The compressor options block exactly as the source image stored it, written back
    /// unchanged when the compressor is kept.
    options: Option<Vec<u8>>,
}

/// Human name of a compressor id, for messages.
pub fn name_of(id: u16) -> &'static str {
    match id {
        GZIP => "gzip",
        LZMA => "lzma",
        LZO => "lzo",
        XZ => "xz",
        LZ4 => "lz4",
        ZSTD => "zstd",
        _ => "an unknown compressor",
    }
}

impl Codec {
    /// The codec of an existing image. `Err` says what is unsupported, for the caller to report.
    pub fn from_image(id: u16, options: Option<&[u8]>, block_size: u32) -> Result<Codec, String> {
        let opt_u32 = |at: usize| -> Option<u32> {
            options
                .and_then(|o| o.get(at..at + 4))
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let kind = match id {
            GZIP => Kind::Gzip {
                level: opt_u32(0)
                    .filter(|l| (1..=9).contains(l))
                    .unwrap_or(GZIP_DEFAULT_LEVEL),
            },
            XZ => Kind::Xz {
                dict_size: opt_u32(0)
                    .filter(|d| *d >= 4096 && *d <= block_size)
                    .unwrap_or(block_size),
            },
            LZ4 => {
                if opt_u32(0).is_some_and(|v| v != 1) {
                    return Err("an lz4 format version other than 1 (legacy lz4)".into());
                }
                Kind::Lz4 {
                    high_compression: opt_u32(4).is_some_and(|f| f & LZ4_HC_FLAG != 0),
                }
            }
            ZSTD => Kind::Zstd {
                level: opt_u32(0)
                    .and_then(|l| i32::try_from(l).ok())
                    .filter(|l| (1..=22).contains(l))
                    .unwrap_or(ZSTD_DEFAULT_LEVEL),
            },
            LZMA | LZO => {
                return Err(format!(
                    "the {} compressor (rebuild it with gzip, xz, zstd or lz4)",
                    name_of(id)
                ))
            }
            other => {
                return Err(format!(
                    "compressor id {other}, which is not a squashfs compressor"
                ))
            }
        };
        Ok(Codec {
            kind,
            options: options.map(<[u8]>::to_vec),
        })
    }

    /// xz as `mksquashfs -comp xz` writes it by default: no options block, dictionary = block size.
    pub fn xz_default(block_size: u32) -> Codec {
        Codec {
            kind: Kind::Xz {
                dict_size: block_size,
            },
            options: None,
        }
    }

    /// gzip as mksquashfs writes it by default.
    pub fn gzip_default() -> Codec {
        Codec {
            kind: Kind::Gzip {
                level: GZIP_DEFAULT_LEVEL,
            },
            options: None,
        }
    }

    pub fn id(&self) -> u16 {
        match self.kind {
            Kind::Gzip { .. } => GZIP,
            Kind::Xz { .. } => XZ,
            Kind::Lz4 { .. } => LZ4,
            Kind::Zstd { .. } => ZSTD,
        }
    }

    pub fn name(&self) -> &'static str {
        name_of(self.id())
    }

    /// Everything besides the input that decides the bytes [`Codec::compress`] makes: the
    /// compressor, its options, how this module drives it and the version of the library doing
    /// the work. Two blocks compressed under one identity from the same bytes are the same
    /// bytes, which is what lets the block cache hand out a block another build of the tool
    /// compressed. `None` for the compressors whose library version cannot be named here; only
    /// xz is ever an output of transcoding.
    pub fn encoder_identity(&self) -> Option<String> {
        match self.kind {
            Kind::Xz { dict_size } => Some(format!(
                "xz revision {XZ_ENCODER_REVISION}: liblzma {}, preset {XZ_PRESET}, lzma2 dictionary {dict_size}, crc32",
                liblzma_version()
            )),
            Kind::Gzip { .. } | Kind::Lz4 { .. } | Kind::Zstd { .. } => None,
        }
    }

    /// The options block to write after the superblock, if any.
    pub fn options(&self) -> Option<&[u8]> {
        self.options.as_deref()
    }

    /// Compresses one block. `None` means compression did not make it smaller, and the block
    /// is to be stored uncompressed, as mksquashfs does.
    pub fn compress(&self, input: &[u8]) -> Option<Vec<u8>> {
        if input.is_empty() {
            return None;
        }
        let out = match self.kind {
            Kind::Gzip { level } => {
                let mut e = flate2::write::ZlibEncoder::new(
                    Vec::with_capacity(input.len()),
                    flate2::Compression::new(level),
                );
                e.write_all(input).ok()?;
                e.finish().ok()?
            }
            Kind::Xz { dict_size } => xz_compress(input, dict_size)?,
            // Bare LZ4 blocks, as squashfs stores them: LZ4_compress_default, or LZ4HC where
            // the image was made with -Xhc (level 9, LZ4HC's default).
            Kind::Lz4 { high_compression } => {
                let mode =
                    high_compression.then_some(lz4::block::CompressionMode::HIGHCOMPRESSION(9));
                lz4::block::compress(input, mode, false).ok()?
            }
            Kind::Zstd { level } => zstd::bulk::compress(input, level).ok()?,
        };
        if out.len() < input.len() {
            Some(out)
        } else {
            None
        }
    }

    /// Decompresses one block that must expand to at most `max_out` bytes.
    pub fn decompress(&self, input: &[u8], max_out: usize) -> Result<Vec<u8>, String> {
        match self.kind {
            Kind::Gzip { .. } => {
                let mut d = flate2::Decompress::new(true);
                let mut out = Vec::with_capacity(max_out);
                let status = d
                    .decompress_vec(input, &mut out, flate2::FlushDecompress::Finish)
                    .map_err(|e| format!("gzip data is damaged ({e})"))?;
                if status != flate2::Status::StreamEnd {
                    return Err(format!(
                        "gzip data does not end within {max_out} bytes of output"
                    ));
                }
                Ok(out)
            }
            Kind::Xz { .. } => xz_decompress(input, max_out),
            Kind::Lz4 { .. } => {
                let mut out = vec![0u8; max_out];
                let limit =
                    i32::try_from(max_out).map_err(|_| "lz4 block too large".to_string())?;
                let n = lz4::block::decompress_to_buffer(input, Some(limit), &mut out)
                    .map_err(|e| format!("lz4 data is damaged or too large ({e})"))?;
                out.truncate(n);
                Ok(out)
            }
            Kind::Zstd { .. } => zstd::bulk::decompress(input, max_out)
                .map_err(|e| format!("zstd data is damaged or too large ({e})")),
        }
    }
}

/// Raised whenever [`xz_compress`] changes the way it calls liblzma (filters, check, flags), so
/// that blocks compressed the old way are never taken for new ones: part of
/// [`Codec::encoder_identity`].
const XZ_ENCODER_REVISION: u32 = 1;

/// The version of the liblzma linked in (the xz sources liblzma-sys bundles), e.g. "5.8.1".
fn liblzma_version() -> String {
    // SAFETY: lzma_version_string takes no arguments and returns a pointer to a static,
    // NUL-terminated string that lives as long as the library.
    let text = unsafe { std::ffi::CStr::from_ptr(liblzma_sys::lzma_version_string()) };
    text.to_string_lossy().into_owned()
}

fn xz_compress(input: &[u8], dict_size: u32) -> Option<Vec<u8>> {
    use liblzma::stream::{Action, Check, Filters, LzmaOptions, Status, Stream};
    let mut opts = LzmaOptions::new_preset(XZ_PRESET).ok()?;
    opts.dict_size(dict_size);
    let mut filters = Filters::new();
    filters.lzma2(&opts);
    // CRC32, not the xz default CRC64: the kernel's xz decoder only checks CRC32.
    let mut s = Stream::new_stream_encoder(&filters, Check::Crc32).ok()?;
    let mut out = Vec::with_capacity(input.len() + 128);
    loop {
        let consumed = s.total_in() as usize;
        match s
            .process_vec(&input[consumed..], &mut out, Action::Finish)
            .ok()?
        {
            Status::StreamEnd => return Some(out),
            _ => out.reserve(out.capacity().max(4096)),
        }
    }
}

fn xz_decompress(input: &[u8], max_out: usize) -> Result<Vec<u8>, String> {
    use liblzma::stream::{Action, Status, Stream};
    // 64 MiB covers any dictionary a squashfs block (at most 1 MiB) can need.
    let mut s = Stream::new_stream_decoder(64 << 20, 0)
        .map_err(|e| format!("xz decoder could not start ({e})"))?;
    let mut out = Vec::with_capacity(max_out);
    loop {
        let consumed = s.total_in() as usize;
        let status = s
            .process_vec(&input[consumed..], &mut out, Action::Finish)
            .map_err(|e| format!("xz data is damaged ({e})"))?;
        match status {
            Status::StreamEnd => return Ok(out),
            _ if out.len() >= max_out => {
                return Err(format!("xz data expands beyond {max_out} bytes"))
            }
            _ if s.total_in() as usize >= input.len() && out.len() < out.capacity() => {
                return Err("xz data ends before its stream does".into())
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips_and_bounds_its_output() {
        let block: Vec<u8> = (0..131_072u32).map(|i| (i % 251) as u8).collect();
        for id in [GZIP, XZ, LZ4, ZSTD] {
            let codec = Codec::from_image(id, None, 131_072).unwrap();
            let packed = codec.compress(&block).expect("compressible data shrinks");
            assert_eq!(
                codec.decompress(&packed, block.len()).unwrap(),
                block,
                "{}",
                codec.name()
            );
            // A block that expands past the allowed size is an error, not a large allocation.
            assert!(
                codec.decompress(&packed, 1000).is_err(),
                "{} ignored the bound",
                codec.name()
            );
            assert!(codec
                .decompress(&packed[..packed.len() / 2], block.len())
                .is_err());
        }
    }

    #[test]
    fn incompressible_blocks_are_stored_raw() {
        let mut x = 0x1234_5678u32;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert!(Codec::xz_default(131_072).compress(&noise).is_none());
    }

    #[test]
    fn the_xz_identity_names_the_library_version_and_the_options() {
        let identity = Codec::xz_default(131_072).encoder_identity().unwrap();
        assert!(identity.contains(&format!("liblzma {}", liblzma_version())));
        assert!(liblzma_version().starts_with('5'), "{identity}");
        assert_ne!(Some(identity), Codec::xz_default(65_536).encoder_identity());
        assert_eq!(Codec::gzip_default().encoder_identity(), None);
    }

    #[test]
    fn lzo_and_lzma_are_refused_with_advice() {
        for id in [LZO, LZMA] {
            let why = Codec::from_image(id, None, 131_072).unwrap_err();
            assert!(why.contains("rebuild it with"), "{why}");
        }
    }
}
