//! In-module ECDSA verification (ES256, ES384) with fixed-base comb tables.
//!
//! A verification computes u1·G + u2·Q. The RustCrypto crates do it with a joint double-and-add
//! (one doubling per scalar bit); here both G and the key's point Q have a table of the multiples
//! j·16^i·P, so each product is at most one addition per 4-bit digit and no doublings: about
//! three times faster. Q's table is built on first use, once per key and
//! worker (signatures are public data, so the table lookups need not be constant-time). The group
//! arithmetic itself (complete formulas, batch normalisation) is the RustCrypto crates'.

use elliptic_curve::ff::{Field, PrimeField};
use elliptic_curve::group::{Curve, Group};
use elliptic_curve::ops::Reduce;
use elliptic_curve::point::AffineCoordinates;
use elliptic_curve::{CurveArithmetic, FieldBytes, PrimeCurve};
use sha2::Digest as _;
use std::sync::OnceLock;

const DIGIT_BITS: usize = 4;
const DIGITS_PER_BYTE: usize = 8 / DIGIT_BITS;
/// Multiples 1..=15 of one power of 16 (the zero digit adds nothing).
const NONZERO_DIGITS: usize = (1 << DIGIT_BITS) - 1;

/// `window[i][j - 1] = j · 16^i · P`, for every 4-bit digit position `i`. The points stay
/// projective: normalising them costs a field inversion each (these crates have no batch
/// inversion), more than the mixed additions would save.
pub struct Comb<C: CurveArithmetic> {
    windows: Vec<[C::ProjectivePoint; NONZERO_DIGITS]>,
}

impl<C> Comb<C>
where
    C: CurveArithmetic,
    C::Scalar: PrimeField<Repr = FieldBytes<C>>,
{
    pub fn new(point: C::ProjectivePoint) -> Self {
        let digits = FieldBytes::<C>::default().len() * DIGITS_PER_BYTE;
        let mut multiples = Vec::with_capacity(digits * NONZERO_DIGITS);
        let mut base = point;
        for _ in 0..digits {
            let mut multiple = base;
            for _ in 0..NONZERO_DIGITS {
                multiples.push(multiple);
                multiple += base;
            }
            // `multiple` is now 16·base.
            base = multiple;
        }
        let windows = multiples
            .chunks_exact(NONZERO_DIGITS)
            .filter_map(|chunk| <[C::ProjectivePoint; NONZERO_DIGITS]>::try_from(chunk).ok())
            .collect();
        Self { windows }
    }

    /// `k · P`, one addition per non-zero 4-bit digit of `k`.
    fn mul(&self, k: &C::Scalar) -> C::ProjectivePoint {
        let repr = k.to_repr();
        // Big-endian bytes: the last byte holds digits 0 and 1.
        let digits = repr.iter().rev().flat_map(|b| [b & 0x0f, b >> 4]);
        let mut acc = C::ProjectivePoint::identity();
        for (window, digit) in self.windows.iter().zip(digits) {
            if let Some(multiple) = usize::from(digit)
                .checked_sub(1)
                .and_then(|j| window.get(j))
            {
                acc += *multiple;
            }
        }
        acc
    }
}

/// ECDSA verification of `r || s` (JOSE form) over a message hash of the field's size.
pub fn verify<C>(generator: &Comb<C>, key: &Comb<C>, hash: &FieldBytes<C>, sig: &[u8]) -> bool
where
    C: CurveArithmetic + PrimeCurve,
    C::Scalar: PrimeField<Repr = FieldBytes<C>> + Reduce<C::Uint, Bytes = FieldBytes<C>>,
{
    let size = FieldBytes::<C>::default().len();
    if sig.len() != 2 * size {
        return false;
    }
    let (r_bytes, s_bytes) = sig.split_at(size);
    let scalar = |bytes: &[u8]| -> Option<C::Scalar> {
        let mut repr = FieldBytes::<C>::default();
        repr.iter_mut().zip(bytes).for_each(|(d, b)| *d = *b);
        Option::<C::Scalar>::from(C::Scalar::from_repr(repr)).filter(|k| !bool::from(k.is_zero()))
    };
    let (Some(r), Some(s)) = (scalar(r_bytes), scalar(s_bytes)) else {
        return false;
    };
    let Some(s_inv) = Option::<C::Scalar>::from(s.invert()) else {
        return false;
    };
    let e = <C::Scalar as Reduce<C::Uint>>::reduce_bytes(hash);
    let point = generator.mul(&(e * s_inv)) + key.mul(&(r * s_inv));
    if bool::from(point.is_identity()) {
        return false;
    }
    let x = point.to_affine().x();
    <C::Scalar as Reduce<C::Uint>>::reduce_bytes(&x) == r
}

/// A public key and, once it has verified in the module, its comb table.
pub struct EcKey<C: CurveArithmetic> {
    point: C::AffinePoint,
    table: OnceLock<Box<Comb<C>>>,
}

impl<C: CurveArithmetic> EcKey<C> {
    pub fn new(point: C::AffinePoint) -> Self {
        Self {
            point,
            table: OnceLock::new(),
        }
    }
}

impl<C: CurveArithmetic> Clone for EcKey<C> {
    fn clone(&self) -> Self {
        Self::new(self.point)
    }
}

impl<C: CurveArithmetic> std::fmt::Debug for EcKey<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EcKey")
    }
}

impl EcKey<p256::NistP256> {
    pub fn from_sec1(sec1: &[u8]) -> Option<Self> {
        let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1).ok()?;
        Some(Self::new(*key.as_affine()))
    }

    /// ES256: SHA-256, then ECDSA over P-256.
    pub fn verify(&self, input: &[u8], sig: &[u8]) -> bool {
        let table = self
            .table
            .get_or_init(|| Box::new(Comb::new(self.point.into())));
        verify(p256_generator(), table, &sha2::Sha256::digest(input), sig)
    }
}

impl EcKey<p384::NistP384> {
    pub fn from_sec1(sec1: &[u8]) -> Option<Self> {
        let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(sec1).ok()?;
        Some(Self::new(*key.as_affine()))
    }

    /// ES384: SHA-384, then ECDSA over P-384.
    pub fn verify(&self, input: &[u8], sig: &[u8]) -> bool {
        let table = self
            .table
            .get_or_init(|| Box::new(Comb::new(self.point.into())));
        verify(p384_generator(), table, &sha2::Sha384::digest(input), sig)
    }
}

pub fn p256_generator() -> &'static Comb<p256::NistP256> {
    static TABLE: OnceLock<Comb<p256::NistP256>> = OnceLock::new();
    TABLE.get_or_init(|| Comb::new(p256::ProjectivePoint::GENERATOR))
}

pub fn p384_generator() -> &'static Comb<p384::NistP384> {
    static TABLE: OnceLock<Comb<p384::NistP384>> = OnceLock::new();
    TABLE.get_or_init(|| Comb::new(p384::ProjectivePoint::GENERATOR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::{Signer as _, Verifier as _};
    use rand::{rngs::StdRng, RngCore, SeedableRng};
    use sha2::Digest;

    #[test]
    fn keys_verify_through_their_tables() {
        let mut rng = StdRng::seed_from_u64(6);
        let (vk, msg, sig) = p256_case(&mut rng);
        let key =
            EcKey::<p256::NistP256>::from_sec1(vk.to_encoded_point(false).as_bytes()).unwrap();
        assert!(key.verify(&msg, &sig));
        assert!(key.clone().verify(&msg, &sig));
        assert!(!key.verify(b"other", &sig));
    }

    fn p256_case(rng: &mut StdRng) -> (p256::ecdsa::VerifyingKey, Vec<u8>, Vec<u8>) {
        let sk = p256::ecdsa::SigningKey::random(&mut rand_core_06(rng));
        let mut msg = vec![0u8; 1 + (rng.next_u32() % 200) as usize];
        rng.fill_bytes(&mut msg);
        let sig: p256::ecdsa::Signature = sk.sign(&msg);
        (*sk.verifying_key(), msg, sig.to_bytes().to_vec())
    }

    // p256 0.13 takes a rand_core 0.6 RNG, which rand 0.8's StdRng is.
    fn rand_core_06(rng: &mut StdRng) -> StdRng {
        StdRng::seed_from_u64(rng.next_u64())
    }

    fn mutate(rng: &mut StdRng, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        let len = out.len();
        match rng.next_u32() % 4 {
            0 => {
                if let Some(b) = out.get_mut(rng.next_u32() as usize % len) {
                    *b ^= 1 << (rng.next_u32() % 8);
                }
            }
            1 => out.truncate(len - 1),
            2 => out.push(0),
            _ => out.iter_mut().skip(len / 2).for_each(|b| *b = 0),
        }
        out
    }

    #[test]
    fn p256_agrees_with_the_p256_crate() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..60 {
            let (vk, msg, sig) = p256_case(&mut rng);
            let table = Comb::<p256::NistP256>::new(vk.as_affine().into());
            let hash = sha2::Sha256::digest(&msg);
            assert!(verify(p256_generator(), &table, &hash, &sig));
            for _ in 0..4 {
                let bad = mutate(&mut rng, &sig);
                let theirs = p256::ecdsa::Signature::from_slice(&bad)
                    .is_ok_and(|s| vk.verify(&msg, &s).is_ok());
                assert_eq!(verify(p256_generator(), &table, &hash, &bad), theirs);
            }
            let mut other = msg.clone();
            other.push(1);
            assert!(!verify(
                p256_generator(),
                &table,
                &sha2::Sha256::digest(&other),
                &sig
            ));
            let (stranger, _, _) = p256_case(&mut rng);
            let stranger = Comb::<p256::NistP256>::new(stranger.as_affine().into());
            assert!(!verify(p256_generator(), &stranger, &hash, &sig));
        }
    }

    #[test]
    fn p384_agrees_with_the_p384_crate() {
        let mut rng = StdRng::seed_from_u64(8);
        for _ in 0..20 {
            let sk = p384::ecdsa::SigningKey::random(&mut rand_core_06(&mut rng));
            let vk = *sk.verifying_key();
            let msg = rng.next_u64().to_le_bytes();
            let sig: p384::ecdsa::Signature = sk.sign(&msg);
            let sig = sig.to_bytes().to_vec();
            let table = Comb::<p384::NistP384>::new(vk.as_affine().into());
            let hash = sha2::Sha384::digest(msg);
            assert!(verify(p384_generator(), &table, &hash, &sig));
            for _ in 0..4 {
                let bad = mutate(&mut rng, &sig);
                let theirs = p384::ecdsa::Signature::from_slice(&bad)
                    .is_ok_and(|s| vk.verify(&msg, &s).is_ok());
                assert_eq!(verify(p384_generator(), &table, &hash, &bad), theirs);
            }
        }
    }

    #[test]
    fn out_of_range_and_zero_scalars_are_refused() {
        let mut rng = StdRng::seed_from_u64(9);
        let (vk, msg, sig) = p256_case(&mut rng);
        let table = Comb::<p256::NistP256>::new(vk.as_affine().into());
        let hash = sha2::Sha256::digest(&msg);
        let order = hex_bytes("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
        let (r, s) = sig.split_at(32);
        for bad in [
            [&[0u8; 32][..], s].concat(),
            [r, &[0u8; 32][..]].concat(),
            [&order[..], s].concat(),
            [r, &order[..]].concat(),
            [&[0xffu8; 32][..], s].concat(),
        ] {
            assert!(!verify(p256_generator(), &table, &hash, &bad));
        }
        // s and n - s both verify (ECDSA malleability), as in Envoy and the RustCrypto crates.
        let mut s_repr = FieldBytes::<p256::NistP256>::default();
        s_repr.copy_from_slice(s);
        let neg_s = (-p256::Scalar::from_repr(s_repr).unwrap()).to_repr();
        assert!(verify(
            p256_generator(),
            &table,
            &hash,
            &[r, &neg_s[..]].concat()
        ));
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
