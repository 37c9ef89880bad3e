//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets' own
//! checks on stable Rust, so every input the fuzzer kept, and every crash it once found, is a
//! regression test in CI. `scripts/fuzz.sh` runs the fuzzer itself (nightly).

#[path = "../../../fuzz/src/lib.rs"]
mod fuzz_checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap_or_else(|err| panic!("{}: {err}", folder.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", folder.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap();
            std::panic::catch_unwind(|| check(&data)).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(failed.is_empty(), "{target} fails on {failed:#?}");
    eprintln!("{target}: {} corpus files replayed", files.len());
}

#[test]
fn review_corpus() {
    replay("review", fuzz_checks::review);
}

#[test]
fn config_corpus() {
    replay("config", fuzz_checks::config);
}
