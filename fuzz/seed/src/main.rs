//! Writes the engine's built-in sample image to the path given, as a seed for the fuzz corpus.

fn main() {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: vxn-blobs-fuzz-seed OUTPUT");
        std::process::exit(2);
    };
    if let Err(e) = vxn_blobs::squashfs::write_sample_image(out.as_ref(), 1_700_000_000) {
        eprintln!("vxn-blobs-fuzz-seed: {e}");
        std::process::exit(1);
    }
}
