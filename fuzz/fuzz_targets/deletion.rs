//! Deletion objects: the plaintext decoder never panics and round-trips what it accepts.
#![no_main]
use cairn::format::{Deletion, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = decode::<Deletion>("deletion", data) {
        assert_eq!(decode::<Deletion>("deletion", &encode(&v)).expect("re-encodes"), v);
    }
});
