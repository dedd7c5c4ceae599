//! Lock objects: the plaintext decoder never panics and round-trips what it accepts.
#![no_main]
use cairn::format::{Lock, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = decode::<Lock>("lock", data) {
        assert_eq!(decode::<Lock>("lock", &encode(&v)).expect("re-encodes"), v);
    }
});
