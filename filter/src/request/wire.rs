//! The proxy-wasm ABI's header-map encoding, decoded defensively (the host's bytes are not trusted
//! to be well formed).

use std::ops::Range;

/// proxy-wasm map encoding: count, then (key length, value length) pairs, then NUL-terminated
/// keys and values.
pub fn encode_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| 10 + k.len() + v.len())
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len32(pairs.len()));
    for (k, v) in pairs {
        out.extend_from_slice(&len32(k.len()));
        out.extend_from_slice(&len32(v.len()));
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Where each key and value of an encoded map lies in `bytes`, checked at every step.
pub fn map_ranges(bytes: &[u8]) -> Option<Vec<(Range<usize>, Range<usize>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let u32_at = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    };
    let count = u32_at(0)?;
    let mut sizes_at = 4usize;
    let mut data_at = count.checked_mul(8)?.checked_add(4)?;
    let mut out = Vec::with_capacity(count.min(bytes.len() / 8));
    for _ in 0..count {
        let (klen, vlen) = (u32_at(sizes_at)?, u32_at(sizes_at.checked_add(4)?)?);
        sizes_at = sizes_at.checked_add(8)?;
        let key = data_at..data_at.checked_add(klen)?;
        data_at = key.end.checked_add(1)?;
        let value = data_at..data_at.checked_add(vlen)?;
        data_at = value.end.checked_add(1)?;
        bytes.get(key.clone())?;
        bytes.get(value.clone())?;
        out.push((key, value));
    }
    Some(out)
}

/// Inverse of `encode_map`; invalid UTF-8 becomes U+FFFD, which can never form a valid token.
pub fn decode_map(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    Some(decode_ranges(bytes, map_ranges(bytes)?))
}

/// The pairs at `ranges` (from `map_ranges`), invalid UTF-8 as U+FFFD.
pub fn decode_ranges(
    bytes: &[u8],
    ranges: Vec<(Range<usize>, Range<usize>)>,
) -> Vec<(String, String)> {
    let text = |r: Range<usize>| String::from_utf8_lossy(bytes.get(r).unwrap_or(&[])).into_owned();
    ranges
        .into_iter()
        .map(|(k, v)| (text(k), text(v)))
        .collect()
}

/// A boolean property value: Envoy serializes it as one byte.
pub fn decode_bool(bytes: &[u8]) -> bool {
    matches!(bytes, [b] if *b != 0)
}

/// An integer property value: Envoy serializes it as 8 little-endian bytes.
pub fn decode_int(bytes: &[u8]) -> Option<i64> {
    let b: [u8; 8] = bytes.try_into().ok()?;
    Some(i64::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_values() {
        assert!(decode_bool(&[1]));
        assert!(!decode_bool(&[0]));
        assert!(!decode_bool(&[]));
        assert!(!decode_bool(&[1, 1]));
        assert_eq!(decode_int(&8080i64.to_le_bytes()), Some(8080));
        assert_eq!(decode_int(&[1, 2]), None);
    }

    #[test]
    fn roundtrip() {
        let pairs = [
            (":path", "/a?b"),
            ("authorization", "Bearer x.y.z"),
            ("empty", ""),
        ];
        let decoded = decode_map(&encode_map(&pairs)).unwrap();
        let want: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(decoded, want);
        assert_eq!(decode_map(&[]), Some(vec![]));
    }

    #[test]
    fn truncated_or_lying_input_is_refused() {
        let good = encode_map(&[("k", "v"), ("k2", "v2")]);
        for cut in 1..good.len() - 1 {
            assert_eq!(decode_map(&good[..cut]), None, "cut at {cut}");
        }
        assert_eq!(decode_map(&[0xff, 0xff, 0xff, 0xff]), None);
        let mut huge_len = good.clone();
        huge_len[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode_map(&huge_len), None);
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let mut bytes = encode_map(&[("k", "ab")]);
        let n = bytes.len();
        bytes[n - 2] = 0xff;
        assert_eq!(
            decode_map(&bytes),
            Some(vec![("k".into(), "a\u{fffd}".into())])
        );
    }
}
