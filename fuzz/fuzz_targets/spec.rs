//! Fuzzes the spec parser: raw JSON to a resolved spec, as `compile` and `deploy` read it.
//!
//! Beyond "no panic", it asserts the promise the resolved spec makes to the writers: nothing in
//! it can name a place outside `build_dir` or `deploy_dir` (blob_arch and kernel_name are one
//! plain path component, inject destinations absolute and free of "." and ".." components).
#![no_main]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use vxn_blobs::spec::{self, RawSpec};

/// One plain component: what may be joined onto an output directory.
fn is_plain_component(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(parts.next(), Some(Component::Normal(_)))
        && parts.next().is_none()
        && !name.contains('/')
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/fuzz/spec.json");
    let _ = spec::parse_mode(&String::from_utf8_lossy(data));
    let _ = spec::parse_source_date_epoch(OsStr::from_bytes(data));
    let Ok(raw) = RawSpec::parse(data, path) else {
        return;
    };
    // SOURCE_DATE_EPOCH absent, usable and unusable in the environment.
    for env in [None, Some("1700000000"), Some("-1")] {
        let Ok(resolved) = raw.clone().resolve(path, env.map(OsStr::new)) else {
            continue;
        };
        assert!(is_plain_component(&resolved.blob_arch), "{resolved:?}");
        assert!(is_plain_component(&resolved.kernel_name), "{resolved:?}");
        assert!(!spec::RESERVED_NAMES.contains(&resolved.kernel_name.as_str()));
        for inj in &resolved.inject {
            assert!(inj.dest.starts_with('/'), "{inj:?}");
            assert!(
                inj.dest[1..]
                    .split('/')
                    .all(|c| !c.is_empty() && c != "." && c != ".."),
                "{inj:?}"
            );
            assert!(inj.mode <= 0o7777, "{inj:?}");
        }
        let _ = resolved.canonical_bytes();
    }
});
