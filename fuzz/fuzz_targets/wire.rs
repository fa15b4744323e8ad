//! Arbitrary bytes as a proxy-wasm header map (and as bool/int property values). A decoded map
//! must encode and decode back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_authn::wire;

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode_bool(data);
    let _ = wire::decode_int(data);
    if let Some(pairs) = wire::decode_map(data) {
        let borrowed: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let again = wire::decode_map(&wire::encode_map(&borrowed));
        assert_eq!(again.as_ref(), Some(&pairs), "decode(encode(m)) != m");
    }
});
