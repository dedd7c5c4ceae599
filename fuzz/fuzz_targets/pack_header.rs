//! Pack parsing: never panics; a header that opens places every blob inside the pack.
#![no_main]
use cairn::crypto::MasterKey;
use cairn::format::{PACK_TRAILER_LEN, PackHeader, pack_header_len};
use cairn::id::{Id, PackId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = MasterKey::from_parts([1; 32], [2; 32], 3);
    let id = PackId(Id::hash_of(data));
    if let Ok(h) = PackHeader::from_pack_bytes(&key, &id, data) {
        for b in &h.blobs {
            assert!(b.offset + b.length as u64 <= data.len() as u64);
        }
    }
    if data.len() >= PACK_TRAILER_LEN {
        if let Ok(n) = pack_header_len(&id, data.len() as u64, &data[data.len() - PACK_TRAILER_LEN..]) {
            assert!(n as usize + PACK_TRAILER_LEN <= data.len());
        }
    }
});
