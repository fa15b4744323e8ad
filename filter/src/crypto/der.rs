//! Minimal DER encoding for handing keys and signatures to the host's crypto (BoringSSL): public
//! keys as SubjectPublicKeyInfo, ECDSA signatures as `SEQUENCE { r, s }`.

const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
pub const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or(&[]);
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(content);
    out
}

fn sequence(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

/// A non-negative INTEGER from big-endian magnitude bytes: minimal, with a 0 byte when the high
/// bit is set.
fn unsigned_integer(magnitude: &[u8]) -> Vec<u8> {
    let skip = magnitude.iter().take_while(|b| **b == 0).count();
    let trimmed = magnitude.get(skip..).unwrap_or(&[]);
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    tlv(0x02, &content)
}

fn bit_string(content: &[u8]) -> Vec<u8> {
    let mut with_unused_bits = Vec::with_capacity(content.len() + 1);
    with_unused_bits.push(0);
    with_unused_bits.extend_from_slice(content);
    tlv(0x03, &with_unused_bits)
}

pub fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let algorithm = sequence(&[&tlv(0x06, OID_RSA_ENCRYPTION), &[0x05, 0x00]]);
    let key = sequence(&[&unsigned_integer(n), &unsigned_integer(e)]);
    sequence(&[&algorithm, &bit_string(&key)])
}

/// `point` is the uncompressed SEC1 encoding (0x04 || x || y).
pub fn ec_spki(curve_oid: &[u8], point: &[u8]) -> Vec<u8> {
    let algorithm = sequence(&[&tlv(0x06, OID_EC_PUBLIC_KEY), &tlv(0x06, curve_oid)]);
    sequence(&[&algorithm, &bit_string(point)])
}

/// A JOSE ECDSA signature (r || s, each `half` bytes) as DER; None when the length is wrong.
pub fn ecdsa_signature(jose: &[u8], half: usize) -> Option<Vec<u8>> {
    if jose.len() != 2 * half {
        return None;
    }
    let (r, s) = jose.split_at(half);
    Some(sequence(&[&unsigned_integer(r), &unsigned_integer(s)]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::EncodePublicKey;
    use rsa::traits::PublicKeyParts;

    #[test]
    fn rsa_matches_the_rsa_crate() {
        // A fixed public key is enough: n with the high bit set exercises the sign byte.
        let n = rsa::BigUint::from_bytes_be(&[0xc3; 256]);
        let e = rsa::BigUint::from(65537u32);
        let key = rsa::RsaPublicKey::new(n, e).unwrap();
        let want = key.to_public_key_der().unwrap();
        assert_eq!(
            rsa_spki(&key.n().to_bytes_be(), &key.e().to_bytes_be()),
            want.as_bytes()
        );
    }

    #[test]
    fn ec_signature_and_key_shapes() {
        let mut jose = vec![0u8; 64];
        jose[0] = 0x80; // r needs a sign byte
        jose[32] = 0x00;
        jose[33] = 0x01; // s has a leading zero to trim
        let der = ecdsa_signature(&jose, 32).unwrap();
        assert_eq!(&der[..5], &[0x30, der.len() as u8 - 2, 0x02, 33, 0x00]);
        assert_eq!(ecdsa_signature(&jose[..63], 32), None);
        let spki = ec_spki(OID_P256, &[4u8; 65]);
        assert_eq!(spki.len(), 91, "P-256 SPKI is 91 bytes");
        assert_eq!(
            ec_spki(OID_P384, &[4u8; 97]).len(),
            120,
            "P-384 SPKI is 120 bytes"
        );
    }

    #[test]
    fn long_lengths() {
        let big = tlv(0x04, &[0u8; 300]);
        assert_eq!(&big[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(unsigned_integer(&[0, 0, 0]), vec![0x02, 0x01, 0x00]);
    }
}
