//! Key files: decoding never panics; opening with any password never panics (Argon2
//! costs are capped so a hostile file cannot exhaust memory).
#![no_main]
use cairn::format::KeyFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(k) = KeyFile::from_bytes("key", data) {
        if k.kdf.memory_kib <= 1024 && k.kdf.iterations <= 2 {
            let _ = k.open(b"password");
        }
        assert_eq!(KeyFile::from_bytes("key", &k.to_bytes()).expect("re-encodes"), k);
    }
});
