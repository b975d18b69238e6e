//! Replays the kept fuzz corpus (`fuzz/corpus/<target>/`) through the same
//! harnesses cargo fuzz runs, so every ordinary `cargo test` re-checks each
//! interesting input found so far without needing the nightly toolchain.

use std::path::Path;

#[test]
fn every_fuzz_target_has_a_corpus_and_every_input_passes_its_harness() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in vmic_fuzz::TARGETS {
        let dir = corpus.join(target);
        let mut inputs = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            assert!(vmic_fuzz::run(target, &data), "no harness for {target}");
            inputs += 1;
        }
        assert!(inputs >= 3, "{target}: only {inputs} corpus inputs");
    }
}

#[test]
fn every_fuzz_target_file_names_a_harness() {
    let targets = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(targets)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let mut expected: Vec<String> = vmic_fuzz::TARGETS.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);
}
