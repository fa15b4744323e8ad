//! The in-module RSA verifier (`MontKey`: PKCS#1 v1.5 and PSS over SHA-256/384/512) against the
//! `rsa` crate, with fixed keys of 2048, 3072, 2056 and 2049 bits (the last with e = 3). The
//! signature is a valid one of the input's message, altered by the input or not; the input
//! itself; an edge value; a valid signature of another scheme; a raw RSA signature of a valid
//! encoded message the input alters (so the padding checks see near-valid encodings); or the
//! integer cube root of such a message (with e = 3, a signature whose public operation gives
//! back its leading bytes, no private key needed). Any differing verdict is a crash.
//!
//! Input: [key, scheme, other key] [mode, variant] [offset: u16] [message] message bytes, delta.
//! The message byte is 0xc0 + length for a message from the input; any other value picks one of
//! four fixed messages. Signing costs ~0.1 s under ASan, verifying ~4 ms; signatures are made
//! once per key, scheme and message, so most inputs reuse them.
#![no_main]

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use mesh_authn::crypto::rsa_montgomery::{MontKey, SHA256_PREFIX, SHA384_PREFIX, SHA512_PREFIX};
use rand::{rngs::StdRng, SeedableRng};
use rsa::hazmat::{rsa_decrypt_and_check, rsa_encrypt};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256, Sha384, Sha512};

// PKCS#8 DER from `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:B -pkeyopt
// rsa_keygen_pubexp:E -outform DER | openssl pkcs8 -topk8 -nocrypt -inform DER -outform DER`.
const KEYS_DER: [&[u8]; 4] = [
    include_bytes!("../fixtures/rsa/rsa-2048-e65537.p8.der"),
    include_bytes!("../fixtures/rsa/rsa-3072-e65537.p8.der"),
    include_bytes!("../fixtures/rsa/rsa-2056-e65537.p8.der"),
    include_bytes!("../fixtures/rsa/rsa-2049-e3.p8.der"),
];

const FIXED_MESSAGES: [&[u8]; 4] = [
    b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9",
    b"",
    b".",
    &[0x5a; 300],
];

struct Key {
    private: RsaPrivateKey,
    public: RsaPublicKey,
    mont: MontKey,
}

fn keys() -> &'static [Key; 4] {
    static KEYS: OnceLock<[Key; 4]> = OnceLock::new();
    KEYS.get_or_init(|| {
        KEYS_DER.map(|der| {
            let private = RsaPrivateKey::from_pkcs8_der(der).expect("fixture key");
            let public = private.to_public_key();
            let mont = MontKey::new(&public).expect("fixture key has a Montgomery form");
            Key {
                private,
                public,
                mont,
            }
        })
    })
}

#[derive(Clone, Copy, Debug)]
enum Scheme {
    Pkcs1(u8),
    Pss(u8),
}

const SCHEMES: [Scheme; 6] = [
    Scheme::Pkcs1(0),
    Scheme::Pkcs1(1),
    Scheme::Pkcs1(2),
    Scheme::Pss(0),
    Scheme::Pss(1),
    Scheme::Pss(2),
];

fn hash(h: u8, msg: &[u8]) -> Vec<u8> {
    match h {
        0 => Sha256::digest(msg).to_vec(),
        1 => Sha384::digest(msg).to_vec(),
        _ => Sha512::digest(msg).to_vec(),
    }
}

fn sign(key: &Key, scheme: Scheme, msg: &[u8]) -> Vec<u8> {
    let hashed = hash(scheme_hash(scheme), msg);
    // The salt depends on the message only, so a crash replays without this process's cache.
    let rng = &mut StdRng::seed_from_u64(u64::from_le_bytes(
        Sha256::digest(&hashed)[..8].try_into().unwrap(),
    ));
    let signature = match scheme {
        Scheme::Pkcs1(0) => key.private.sign(Pkcs1v15Sign::new::<Sha256>(), &hashed),
        Scheme::Pkcs1(1) => key.private.sign(Pkcs1v15Sign::new::<Sha384>(), &hashed),
        Scheme::Pkcs1(_) => key.private.sign(Pkcs1v15Sign::new::<Sha512>(), &hashed),
        Scheme::Pss(0) => key
            .private
            .sign_with_rng(rng, Pss::new::<Sha256>(), &hashed),
        Scheme::Pss(1) => key
            .private
            .sign_with_rng(rng, Pss::new::<Sha384>(), &hashed),
        Scheme::Pss(_) => key
            .private
            .sign_with_rng(rng, Pss::new::<Sha512>(), &hashed),
    };
    signature.expect("signing with a fixture key")
}

fn signed(key_index: usize, scheme_index: usize, msg: &[u8]) -> Vec<u8> {
    static CACHE: OnceLock<Mutex<HashMap<(usize, usize, Vec<u8>), Vec<u8>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let id = (key_index, scheme_index, msg.to_vec());
    if let Some(sig) = cache.lock().unwrap().get(&id) {
        return sig.clone();
    }
    let sig = sign(&keys()[key_index], SCHEMES[scheme_index], msg);
    let mut cache = cache.lock().unwrap();
    if cache.len() >= 4096 {
        cache.clear();
    }
    cache.insert(id, sig.clone());
    sig
}

fn scheme_hash(scheme: Scheme) -> u8 {
    match scheme {
        Scheme::Pkcs1(h) | Scheme::Pss(h) => h,
    }
}

fn ours(key: &Key, scheme: Scheme, msg: &[u8], sig: &[u8]) -> bool {
    let m = &key.mont;
    match scheme {
        Scheme::Pkcs1(0) => m.verify(SHA256_PREFIX, &Sha256::digest(msg), sig),
        Scheme::Pkcs1(1) => m.verify(SHA384_PREFIX, &Sha384::digest(msg), sig),
        Scheme::Pkcs1(_) => m.verify(SHA512_PREFIX, &Sha512::digest(msg), sig),
        Scheme::Pss(0) => m.verify_pss::<Sha256>(&Sha256::digest(msg), sig),
        Scheme::Pss(1) => m.verify_pss::<Sha384>(&Sha384::digest(msg), sig),
        Scheme::Pss(_) => m.verify_pss::<Sha512>(&Sha512::digest(msg), sig),
    }
}

/// The `rsa` crate's verdict. PSS goes through `pss::VerifyingKey` (salt as long as the hash, as
/// JWS wants): `RsaPublicKey::verify` with `Pss` does not refuse a signature ≥ n (0.9.10).
fn theirs(key: &Key, scheme: Scheme, msg: &[u8], sig: &[u8]) -> bool {
    let public = &key.public;
    let hashed = hash(scheme_hash(scheme), msg);
    let Scheme::Pss(h) = scheme else {
        let padding = match scheme_hash(scheme) {
            0 => Pkcs1v15Sign::new::<Sha256>(),
            1 => Pkcs1v15Sign::new::<Sha384>(),
            _ => Pkcs1v15Sign::new::<Sha512>(),
        };
        return public.verify(padding, &hashed, sig).is_ok();
    };
    let Ok(sig) = rsa::pss::Signature::try_from(sig) else {
        return false;
    };
    let public = public.clone();
    match h {
        0 => rsa::pss::VerifyingKey::<Sha256>::new(public).verify(msg, &sig),
        1 => rsa::pss::VerifyingKey::<Sha384>::new(public).verify(msg, &sig),
        _ => rsa::pss::VerifyingKey::<Sha512>::new(public).verify(msg, &sig),
    }
    .is_ok()
}

/// `x` as exactly `len` big-endian bytes (its low bytes if longer).
fn be(x: &BigUint, len: usize) -> Vec<u8> {
    let bytes = x.to_bytes_be();
    let mut out = vec![0u8; len.saturating_sub(bytes.len())];
    out.extend_from_slice(&bytes[bytes.len().saturating_sub(len)..]);
    out
}

/// The signature whose public operation gives `em` (reduced mod n).
fn raw_sign(key: &Key, em: &[u8]) -> Vec<u8> {
    let m = BigUint::from_bytes_be(em) % key.public.n();
    let s = rsa_decrypt_and_check(&key.private, None::<&mut StdRng>, &m).expect("raw signature");
    be(&s, key.public.size())
}

fn xor_at(bytes: &mut [u8], at: usize, delta: &[u8]) {
    let at = at % bytes.len().max(1);
    for (b, d) in bytes.iter_mut().skip(at).zip(delta) {
        *b ^= d;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&[select, mode, off_hi, off_lo, message], rest)) = data.split_first_chunk::<5>()
    else {
        return;
    };
    let (msg, delta) = match message.checked_sub(0xc0) {
        Some(len) => rest.split_at(usize::from(len).min(rest.len())),
        None => (FIXED_MESSAGES[usize::from(message & 3)], rest),
    };
    let offset = usize::from(u16::from_be_bytes([off_hi, off_lo]));
    let keys = keys();
    let signer_index = if mode & 7 == 6 {
        3
    } else {
        usize::from(select & 3)
    };
    let signer = &keys[signer_index];
    let verifier = if select & 0x20 != 0 {
        &keys[(signer_index + 1) & 3]
    } else {
        signer
    };
    let scheme_index = usize::from(select >> 2 & 7) % SCHEMES.len();
    let scheme = SCHEMES[scheme_index];
    let variant = mode >> 3;
    let k = signer.public.size();
    let n = signer.public.n();
    let valid = || signed(signer_index, scheme_index, msg);
    let valid_em = || {
        let s = BigUint::from_bytes_be(&valid());
        be(&rsa_encrypt(&signer.public, &s).unwrap(), k)
    };

    let sig = match mode & 7 {
        0 => valid(),
        1 => {
            let mut s = valid();
            xor_at(&mut s, offset, delta);
            s
        }
        2 => {
            let mut s = valid();
            s.truncate(offset % (k + 1));
            s.extend_from_slice(delta);
            s
        }
        3 => delta.to_vec(),
        4 => {
            let one = BigUint::from(1u8);
            match variant % 10 {
                0 => vec![0; k],
                1 => be(&one, k),
                2 => be(&(n - &one), k),
                3 => be(n, k),
                4 => be(&(n + &one), k),
                5 => vec![0xff; k],
                6 => be(&(BigUint::from_bytes_be(&valid()) + n), k),
                7 => valid().into_iter().skip_while(|b| *b == 0).collect(),
                8 => be(&(one << (8 * (k - 1))), k),
                _ => be(&(n - BigUint::from_bytes_be(&valid())), k),
            }
        }
        5 => {
            let mut em = valid_em();
            xor_at(&mut em, offset, delta);
            raw_sign(signer, &em)
        }
        6 => {
            // Only the e = 3 key's public operation gives back the leading bytes of the cube.
            let mut em = valid_em();
            xor_at(&mut em, offset, delta);
            let root = BigUint::from_bytes_be(&em).cbrt() + BigUint::from(variant);
            be(&root, k)
        }
        _ => signed(signer_index, usize::from(variant) % SCHEMES.len(), msg),
    };

    let (a, b) = (
        ours(verifier, scheme, msg, &sig),
        theirs(verifier, scheme, msg, &sig),
    );
    if a != b {
        // The crate drops EM's leading byte unread when the modulus has 8m + 1 bits; RFC 8017
        // (I2OSP to emLen bytes) and BoringSSL (RSA_R_FIRST_OCTET_INVALID) refuse it nonzero.
        let em = rsa_encrypt(&verifier.public, &BigUint::from_bytes_be(&sig)).unwrap();
        let leading_byte_set = matches!(scheme, Scheme::Pss(_))
            && verifier.public.n().bits() % 8 == 1
            && sig.len() == verifier.public.size()
            && BigUint::from_bytes_be(&sig) < *verifier.public.n()
            && em.bits() > 8 * (verifier.public.size() - 1);
        assert!(
            !a && b && leading_byte_set,
            "verdicts differ: module {a}, rsa crate {b}, {} bits, {scheme:?}, mode {mode}",
            verifier.public.n().bits()
        );
    }
});
