//! Signatures checked by the host: Envoy's `verify_signature` foreign function (BoringSSL), for
//! RS256/384/512 and ES256/384/512. Arguments and result are the protobuf messages
//! `envoy.source.extensions.common.wasm.VerifySignatureArguments` / `VerifySignatureResult`.

use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{Alg, Key};

pub const FUNCTION: &str = "verify_signature";

/// A signature the host must accept, and reject once altered: proves at start that the host's
/// verifier exists and that keys and signatures reach it in the form it expects.
const SELF_TEST_X: &str = "L1YOKDBmaen7piUOinbz2ijL6XfaQsXw-YWU6dXAWso";
const SELF_TEST_Y: &str = "wInqmmyZfzjPD0_mIr2UAzrftojdLCh7bMmNyW6H7TQ";
pub const SELF_TEST_INPUT: &[u8] = b"mesh-authn host verifier self-test";
pub const SELF_TEST_SIGNATURE_HEX: &str = "f7ea954da54e57b43b2aef27dea7265e50a45a10de17c40ac0aba1af696bfa1e80c70f087af32ced6ece55ab1ccb92d15f0f9ccf9bd2120651026b0e6fe78aa5";

/// The self-test's two requests: the genuine signature, then one with a flipped bit.
pub fn self_test_requests() -> Option<(Vec<u8>, Vec<u8>)> {
    let key = &self_test_key()?;
    let sig: Vec<u8> = (0..SELF_TEST_SIGNATURE_HEX.len() / 2)
        .map(|i| u8::from_str_radix(SELF_TEST_SIGNATURE_HEX.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let mut bad = sig.clone();
    if let Some(b) = bad.last_mut() {
        *b ^= 1;
    }
    Some((
        request(Alg::Es256, key, SELF_TEST_INPUT, &sig)?,
        request(Alg::Es256, key, SELF_TEST_INPUT, &bad)?,
    ))
}

fn self_test_key() -> Option<Key> {
    let coordinate = |b64: &str| URL_SAFE_NO_PAD.decode(b64).ok();
    Key::ec(
        "P-256",
        &coordinate(SELF_TEST_X)?,
        &coordinate(SELF_TEST_Y)?,
    )
    .ok()
}

/// The hash name the host wants.
pub fn host_alg(alg: Alg) -> Option<&'static str> {
    Some(match alg {
        Alg::Rs256 | Alg::Es256 => "sha256",
        Alg::Rs384 | Alg::Es384 => "sha384",
        Alg::Rs512 | Alg::Es512 => "sha512",
        _ => return None,
    })
}

/// The signature as the host takes it: RSA as is, ECDSA's JOSE r || s as DER. None when r || s
/// is not a signature at all (wrong length, r or s not in [1, n-1]), which BoringSSL would refuse.
fn host_signature(alg: Alg, sig: &[u8]) -> Option<Cow<'_, [u8]>> {
    Some(match alg {
        Alg::Es256 => Cow::Owned(
            p256::ecdsa::Signature::from_slice(sig)
                .ok()?
                .to_der()
                .as_bytes()
                .to_vec(),
        ),
        Alg::Es384 => Cow::Owned(
            p384::ecdsa::Signature::from_slice(sig)
                .ok()?
                .to_der()
                .as_bytes()
                .to_vec(),
        ),
        Alg::Es512 => Cow::Owned(
            p521::ecdsa::Signature::from_slice(sig)
                .ok()?
                .to_der()
                .as_bytes()
                .to_vec(),
        ),
        _ => Cow::Borrowed(sig),
    })
}

fn varint(mut v: usize, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field(number: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(number << 3 | 2);
    varint(bytes.len(), out);
    out.extend_from_slice(bytes);
}

/// The encoded arguments, or None when the host cannot check this algorithm or key.
pub fn request(alg: Alg, key: &Key, input: &[u8], sig: &[u8]) -> Option<Vec<u8>> {
    let hash = host_alg(alg)?;
    let der_key = key.host_der.as_deref()?;
    let signature = host_signature(alg, sig)?;
    let mut out =
        Vec::with_capacity(hash.len() + der_key.len() + signature.len() + input.len() + 16);
    field(1, hash.as_bytes(), &mut out);
    field(2, der_key, &mut out);
    field(3, &signature, &mut out);
    field(4, input, &mut out);
    Some(out)
}

/// `VerifySignatureResult.result`; None when the bytes are not that message.
pub fn parse_result(bytes: &[u8]) -> Option<bool> {
    let mut result = false;
    let mut rest = bytes;
    while let Some((&tag, tail)) = rest.split_first() {
        match (tag >> 3, tag & 7) {
            (1, 0) => {
                let (&v, tail) = tail.split_first()?;
                result = v == 1;
                rest = tail;
            }
            (_, 2) => {
                let (len, tail) = read_varint(tail)?;
                rest = tail.get(len..)?;
            }
            _ => return None,
        }
    }
    Some(result)
}

fn read_varint(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut v: usize = 0;
    for (i, b) in bytes.iter().enumerate().take(5) {
        v |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((v, bytes.get(i + 1..)?));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::KeyMaterial;

    fn key(der: Option<Vec<u8>>) -> Key {
        Key {
            material: KeyMaterial::Hmac(vec![1]),
            host_der: der,
        }
    }

    #[test]
    fn encodes_arguments() {
        let r = request(Alg::Rs256, &key(Some(vec![9; 3])), b"in", b"sg").unwrap();
        assert_eq!(
            r,
            [
                &[0x0a, 6][..],
                b"sha256",
                &[0x12, 3, 9, 9, 9],
                &[0x1a, 2],
                b"sg",
                &[0x22, 2],
                b"in"
            ]
            .concat()
        );
        let long = request(Alg::Rs512, &key(Some(vec![0; 300])), b"", b"").unwrap();
        assert_eq!(&long[8..11], &[0x12, 0xac, 0x02]);
        assert!(request(Alg::Ps256, &key(Some(vec![1])), b"", b"").is_none());
        assert!(request(Alg::Rs256, &key(None), b"", b"").is_none());
        assert!(request(Alg::Es256, &key(Some(vec![1])), b"", &[0; 63]).is_none());
        assert!(request(Alg::Es256, &key(Some(vec![1])), b"", &[1; 64]).is_some());
        assert!(request(Alg::Es384, &key(Some(vec![1])), b"", &[1; 64]).is_none());
    }

    #[test]
    fn ecdsa_signatures_as_der() {
        // r needs a sign byte, s has leading zeros to drop.
        let mut jose = [0x11u8; 64];
        jose[0] = 0x80;
        jose[32..34].copy_from_slice(&[0, 0]);
        let der = host_signature(Alg::Es256, &jose).unwrap();
        let want = [
            &[0x30, 0x43, 0x02, 0x21, 0x00][..],
            &jose[..32],
            &[0x02, 0x1e],
            &jose[34..],
        ]
        .concat();
        assert_eq!(*der, want[..]);
        // Zero, or not below the group order: no signature, so nothing to ask the host.
        let mut zero_s = jose;
        zero_s[32..].fill(0);
        assert!(host_signature(Alg::Es256, &zero_s).is_none());
        assert!(host_signature(Alg::Es256, &[0xff; 64]).is_none());
        assert!(host_signature(Alg::Es384, &[0x11; 96]).is_some());
        assert!(host_signature(Alg::Es384, &[0x11; 64]).is_none());
        assert!(host_signature(Alg::Es512, &[0x01; 132]).is_some());
        assert!(host_signature(Alg::Es512, &[0x11; 96]).is_none());
        assert_eq!(*host_signature(Alg::Rs256, b"as is").unwrap(), b"as is"[..]);
    }

    #[test]
    fn self_test_vector_is_genuine() {
        let key = self_test_key().unwrap();
        let sig: Vec<u8> = (0..64)
            .map(|i| u8::from_str_radix(&SELF_TEST_SIGNATURE_HEX[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert!(crate::crypto::verify(
            Alg::Es256,
            &key.material,
            SELF_TEST_INPUT,
            &sig
        ));
        let (good, bad) = self_test_requests().unwrap();
        assert_ne!(good, bad);
    }

    #[test]
    fn parses_results() {
        assert_eq!(parse_result(&[0x08, 0x01]), Some(true));
        assert_eq!(parse_result(&[]), Some(false));
        assert_eq!(
            parse_result(&[0x08, 0x00, 0x12, 0x03, b'b', b'a', b'd']),
            Some(false)
        );
        assert_eq!(parse_result(&[0x12, 0x05, b'x']), None);
        assert_eq!(parse_result(&[0x08]), None);
        assert_eq!(parse_result(&[0x1d, 0, 0, 0, 0]), None);
    }
}
