//! Blob opening: never panics, and anything that opens hashes to its id.
#![no_main]
use cairn::crypto::MasterKey;
use cairn::format::{BlobType, open_blob};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_parts([1; 32], [2; 32], 3);
    let id = key.blob_id(b"fixed");
    if let Ok(p) = open_blob(&key, BlobType::Data, &id, data, None) {
        assert_eq!(key.blob_id(&p), id);
    }
});
