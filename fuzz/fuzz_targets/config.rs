//! Config: the sealed-object path (open, decompress, decode) and the plaintext decoder
//! never panic.
#![no_main]
use cairn::crypto::MasterKey;
use cairn::format::{Config, aad, decode, decompress, open_object};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_parts([1; 32], [2; 32], 3);
    let _ = open_object::<Config>(&key, aad::CONFIG, "config", data);
    if let Ok(c) = decode::<Config>("config", data) {
        let _ = c.validate();
    }
    let _ = decompress("config", data, None);
});
