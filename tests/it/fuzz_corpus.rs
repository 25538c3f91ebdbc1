//! Replays every committed fuzz corpus file (fuzz/corpus/TARGET/*, crashes found by
//! `scripts/fuzz` included) through its harness in `moninit::fuzzing`, on stable: what the
//! fuzzer once broke stays fixed.

use std::path::Path;

fn replay(target: &str, harness: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let result = std::panic::catch_unwind(|| harness(&data));
        assert!(
            result.is_ok(),
            "{target}: {} breaks the property",
            path.display()
        );
        n += 1;
    }
    assert!(n > 0, "no corpus for {target}");
}

#[test]
fn the_agent_config_corpus_parses_or_fails_cleanly() {
    replay("agent_config", moninit::fuzzing::agent_config);
}

#[test]
fn the_inputs_layout_corpus_never_escapes_its_directories() {
    replay("inputs_layout", moninit::fuzzing::inputs_layout);
}

#[test]
fn the_proxy_request_corpus_is_forwarded_exactly_as_signed() {
    replay("proxy_request", moninit::fuzzing::proxy_request);
}

#[test]
fn the_body_reader_corpus_reads_back_what_was_sent() {
    replay("body_reader", moninit::fuzzing::body_reader);
}
