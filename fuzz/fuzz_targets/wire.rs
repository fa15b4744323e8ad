//! Arbitrary bytes as a proxy-wasm header map (and as bool/int property values). A decoded map
//! must encode and decode back to itself, and the zero-copy request view the filter builds from the
//! same bytes must see exactly the decoded headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_authn::request::{wire, Request};

fuzz_target!(|data: &[u8]| {
    let _ = wire::decode_bool(data);
    let _ = wire::decode_int(data);
    let pairs = wire::decode_map(data);
    let request = Request::from_wire(data.to_vec());
    assert_eq!(
        request.is_some(),
        pairs.is_some(),
        "from_wire and decode_map disagree"
    );
    let (Some(pairs), Some(request)) = (pairs, request) else {
        return;
    };
    let borrowed: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let again = wire::decode_map(&wire::encode_map(&borrowed));
    assert_eq!(again.as_ref(), Some(&pairs), "decode(encode(m)) != m");
    for (name, _) in borrowed.iter().take(32) {
        let expected: Vec<&str> = borrowed
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| *v)
            .collect();
        let seen: Vec<&str> = request.header_values(name).collect();
        assert_eq!(seen, expected, "from_wire sees other values for {name:?}");
    }
    let _ = (request.path(), request.realm());
});
