//! Trees: never panic; a decoded tree is sorted and re-encodes to a tree equal to it.
#![no_main]
use cairn::format::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = Tree::decode("tree", data) {
        assert!(t.nodes.windows(2).all(|w| w[0].name < w[1].name));
        assert_eq!(Tree::decode("tree", &t.encode()).expect("re-encodes"), t);
    }
});
