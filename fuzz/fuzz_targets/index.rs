//! Index files: the plaintext decoder (after authentication) never panics, and what
//! decodes re-encodes to the same bytes.
#![no_main]
use cairn::format::{IndexFile, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = decode::<IndexFile>("index", data) {
        let again: IndexFile = decode("index", &encode(&v)).expect("re-encoding decodes");
        assert_eq!(again, v);
    }
});
