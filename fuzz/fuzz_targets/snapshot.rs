//! Snapshots: the plaintext decoder never panics and round-trips what it accepts.
#![no_main]
use cairn::format::{Snapshot, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = decode::<Snapshot>("snapshot", data) {
        assert_eq!(decode::<Snapshot>("snapshot", &encode(&s)).expect("re-encodes"), s);
    }
});
