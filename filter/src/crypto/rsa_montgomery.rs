//! RSA signature verification (RS256/384/512: PKCS#1 v1.5; PS256/384/512: PSS) with a Montgomery
//! exponentiation prepared once per key: the general-purpose bignum of the `rsa` crate spends
//! ~250 µs per verify natively, this one a fraction of that, which matters when signatures are
//! checked inside the VM.

use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use sha2::Digest;

/// A public key in the form the exponentiation wants: little-endian 32-bit limbs.
#[derive(Debug, Clone)]
pub struct MontKey {
    n: Vec<u32>,
    /// -n⁻¹ mod 2³²
    n0inv: u32,
    /// R² mod n, R = 2^(32·limbs)
    r2: Vec<u32>,
    e: u64,
    /// Modulus length in bytes.
    k: usize,
    /// Modulus length in bits.
    bits: usize,
}

fn limbs(x: &BigUint, len: usize) -> Vec<u32> {
    let mut out = vec![0u32; len];
    for (limb, chunk) in out.iter_mut().zip(x.to_bytes_le().chunks(4)) {
        let mut b = [0u8; 4];
        for (d, s) in b.iter_mut().zip(chunk) {
            *d = *s;
        }
        *limb = u32::from_le_bytes(b);
    }
    out
}

// Limb indices below are bounded by the limb count fixed in `new` (every operand has `n.len()`
// limbs, `t` two more), so no index can fail.
#[allow(clippy::indexing_slicing)]
impl MontKey {
    /// None unless n and e are odd and e is in [3, 2³³): the public keys BoringSSL verifies with
    /// (`rsa_check_public_key`), and `RsaPublicKey::new` admits; also what this arithmetic needs.
    pub fn new(key: &RsaPublicKey) -> Option<Self> {
        let n = key.n();
        let e_bytes = key.e().to_bytes_be();
        if e_bytes.len() > 5 {
            return None;
        }
        let e = e_bytes.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
        if e < 3 || e >> 33 != 0 || e & 1 == 0 {
            return None;
        }
        let k = n.bits().div_ceil(8);
        let len = k.div_ceil(4);
        let n_limbs = limbs(n, len);
        let n0 = *n_limbs.first().filter(|n0| *n0 & 1 == 1)?;
        // Newton's iteration for n0⁻¹ mod 2³²: each step doubles the correct low bits.
        let mut inv: u32 = 1;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(n0.wrapping_mul(inv)));
        }
        let r2 = (BigUint::from(1u8) << (64 * len)) % n;
        Some(Self {
            r2: limbs(&r2, len),
            n: n_limbs,
            n0inv: inv.wrapping_neg(),
            e,
            k,
            bits: n.bits(),
        })
    }

    /// a·b·R⁻¹ mod n (CIOS), all operands below n.
    fn mul(&self, a: &[u32], b: &[u32]) -> Vec<u32> {
        let s = self.n.len();
        let mut t = vec![0u32; s + 2];
        for &bi in b.iter().take(s) {
            let mut carry = 0u64;
            for (tj, &aj) in t.iter_mut().zip(a) {
                let v = u64::from(*tj) + u64::from(aj) * u64::from(bi) + carry;
                *tj = v as u32;
                carry = v >> 32;
            }
            let v = u64::from(t[s]) + carry;
            t[s] = v as u32;
            t[s + 1] = (v >> 32) as u32;

            let m = t[0].wrapping_mul(self.n0inv);
            let mut carry = (u64::from(t[0]) + u64::from(m) * u64::from(self.n[0])) >> 32;
            for j in 1..s {
                let v = u64::from(t[j]) + u64::from(m) * u64::from(self.n[j]) + carry;
                t[j - 1] = v as u32;
                carry = v >> 32;
            }
            let v = u64::from(t[s]) + carry;
            t[s - 1] = v as u32;
            t[s] = t[s + 1].wrapping_add((v >> 32) as u32);
        }
        t.truncate(s + 1);
        self.below_n(t)
    }

    /// The last step of a Montgomery product: `t` (limbs + 1 words, below 2n) reduced below n.
    fn below_n(&self, mut t: Vec<u32>) -> Vec<u32> {
        let s = self.n.len();
        if t[s] != 0 || !less_than(&t[..s], &self.n) {
            let mut borrow = 0i64;
            for (tj, &nj) in t.iter_mut().zip(&self.n) {
                let v = i64::from(*tj) - i64::from(nj) + borrow;
                *tj = v as u32;
                borrow = v >> 32;
            }
        }
        t.truncate(s);
        t
    }

    /// a²·R⁻¹ mod n, a below n: the square, using each cross product once and doubling, then a
    /// separate Montgomery reduction. About three quarters of the multiplications of `mul(a, a)`;
    /// all but one product of a verification with e = 65537 are squares.
    fn sqr(&self, a: &[u32]) -> Vec<u32> {
        let s = self.n.len();
        let mut t = vec![0u32; 2 * s + 1];
        // Cross products a_i·a_j (i < j); row i ends at limb i + s, which no earlier row touched.
        for i in 0..s {
            let ai = u64::from(a[i]);
            let mut carry = 0u64;
            for (tk, &aj) in t[2 * i + 1..].iter_mut().zip(&a[i + 1..s]) {
                let v = u64::from(*tk) + ai * u64::from(aj) + carry;
                *tk = v as u32;
                carry = v >> 32;
            }
            t[i + s] = carry as u32;
        }
        // Doubled, then the squares a_i² added on the diagonal.
        let mut top = 0u32;
        for tk in t.iter_mut() {
            let next_top = *tk >> 31;
            *tk = *tk << 1 | top;
            top = next_top;
        }
        let mut carry = 0u64;
        for (pair, &ai) in t.chunks_mut(2).zip(&a[..s]) {
            let sq = u64::from(ai) * u64::from(ai);
            let lo = u64::from(pair[0]) + (sq & 0xffff_ffff) + carry;
            pair[0] = lo as u32;
            let hi = u64::from(pair[1]) + (sq >> 32) + (lo >> 32);
            pair[1] = hi as u32;
            carry = hi >> 32;
        }
        t[2 * s] = t[2 * s].wrapping_add(carry as u32);
        // Montgomery reduction: each step clears limb i.
        for i in 0..s {
            let m = t[i].wrapping_mul(self.n0inv);
            let mut carry = 0u64;
            for (tk, &nj) in t[i..i + s].iter_mut().zip(&self.n) {
                let v = u64::from(*tk) + u64::from(m) * u64::from(nj) + carry;
                *tk = v as u32;
                carry = v >> 32;
            }
            for tk in t[i + s..].iter_mut() {
                if carry == 0 {
                    break;
                }
                let v = u64::from(*tk) + carry;
                *tk = v as u32;
                carry = v >> 32;
            }
        }
        self.below_n(t.split_off(s))
    }

    /// sigᵉ mod n as k big-endian bytes; None when the signature is not below n.
    fn public_op(&self, sig: &[u8]) -> Option<Vec<u8>> {
        if sig.len() != self.k {
            return None;
        }
        let s_limbs = limbs(&BigUint::from_bytes_be(sig), self.n.len());
        if !less_than(&s_limbs, &self.n) {
            return None;
        }
        let base = self.mul(&s_limbs, &self.r2);
        let mut x = base.clone();
        for bit in (0..63 - self.e.leading_zeros()).rev() {
            x = self.sqr(&x);
            if self.e >> bit & 1 == 1 {
                x = self.mul(&x, &base);
            }
        }
        let mut one = vec![0u32; self.n.len()];
        one[0] = 1;
        let out = self.mul(&x, &one);
        let mut bytes = vec![0u8; self.k];
        for (i, limb) in out.iter().enumerate() {
            for (j, b) in limb.to_le_bytes().iter().enumerate() {
                let pos = 4 * i + j;
                if pos < self.k {
                    bytes[self.k - 1 - pos] = *b;
                }
            }
        }
        Some(bytes)
    }

    /// Whether `sig` is a PKCS#1 v1.5 signature of `hashed` under `digest_info_prefix`.
    pub fn verify(&self, digest_info_prefix: &[u8], hashed: &[u8], sig: &[u8]) -> bool {
        let Some(em) = self.public_op(sig) else {
            return false;
        };
        let t_len = digest_info_prefix.len() + hashed.len();
        if self.k < t_len + 11 {
            return false;
        }
        let pad = self.k - t_len - 3;
        let mut expected = Vec::with_capacity(self.k);
        expected.extend_from_slice(&[0x00, 0x01]);
        expected.extend(std::iter::repeat_n(0xff, pad));
        expected.push(0x00);
        expected.extend_from_slice(digest_info_prefix);
        expected.extend_from_slice(hashed);
        em == expected
    }
}

impl MontKey {
    /// Whether `sig` is an RSASSA-PSS signature of `hashed` (RFC 8017 §8.1.2, EMSA-PSS-VERIFY),
    /// with MGF1 over the same hash and a salt as long as the hash, as JWS requires (RFC 7518
    /// §3.5).
    pub fn verify_pss<D: Digest>(&self, hashed: &[u8], sig: &[u8]) -> bool {
        self.pss_ok::<D>(hashed, sig).unwrap_or(false)
    }

    fn pss_ok<D: Digest>(&self, hashed: &[u8], sig: &[u8]) -> Option<bool> {
        let decrypted = self.public_op(sig)?;
        let h_len = <D as Digest>::output_size();
        let s_len = h_len;
        let em_bits = self.bits.checked_sub(1)?;
        let em_len = em_bits.div_ceil(8);
        if hashed.len() != h_len || em_len < h_len + s_len + 2 {
            return Some(false);
        }
        // The public operation gives k bytes; EM is the last em_len, anything before must be zero.
        let (lead, em) = decrypted.split_at_checked(self.k.checked_sub(em_len)?)?;
        let (&last, rest) = em.split_last()?;
        let (masked_db, h) = rest.split_at_checked(em_len - h_len - 1)?;
        // The top 8·emLen − emBits bits of EM are not part of the encoding and must be zero.
        let top_mask = 0xffu8 >> (8 * em_len - em_bits);
        if lead.iter().any(|b| *b != 0)
            || last != 0xbc
            || masked_db.first().is_some_and(|b| b & !top_mask != 0)
        {
            return Some(false);
        }
        let mut db = masked_db.to_vec();
        for (counter, chunk) in (0u32..).zip(db.chunks_mut(h_len)) {
            let mask = D::new()
                .chain_update(h)
                .chain_update(counter.to_be_bytes())
                .finalize();
            chunk.iter_mut().zip(mask.iter()).for_each(|(d, m)| *d ^= m);
        }
        if let Some(first) = db.first_mut() {
            *first &= top_mask;
        }
        let (padding, rest) = db.split_at_checked(em_len - h_len - s_len - 2)?;
        let (&separator, salt) = rest.split_first()?;
        if padding.iter().any(|b| *b != 0) || separator != 0x01 || salt.len() != s_len {
            return Some(false);
        }
        let expected = D::new()
            .chain_update([0u8; 8])
            .chain_update(hashed)
            .chain_update(salt)
            .finalize();
        Some(expected[..] == *h)
    }
}

fn less_than(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}

/// DigestInfo prefixes (RFC 8017 §9.2, note 1).
pub const SHA256_PREFIX: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
pub const SHA384_PREFIX: &[u8] = &[
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
pub const SHA512_PREFIX: &[u8] = &[
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rsa::{Pkcs1v15Sign, RsaPrivateKey};
    use sha2::{Digest, Sha256, Sha384, Sha512};

    #[test]
    fn agrees_with_the_rsa_crate() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for bits in [2048, 3072, 2056] {
            let private = RsaPrivateKey::new(&mut rng, bits).unwrap();
            let key = private.to_public_key();
            let mont = MontKey::new(&key).unwrap();
            for (i, msg) in [&b"a"[..], b"mesh-authn", &[0u8; 300]].iter().enumerate() {
                let h256 = Sha256::digest(msg);
                let sig = private.sign(Pkcs1v15Sign::new::<Sha256>(), &h256).unwrap();
                assert!(mont.verify(SHA256_PREFIX, &h256, &sig), "{bits} {i}");
                let h384 = Sha384::digest(msg);
                let sig384 = private.sign(Pkcs1v15Sign::new::<Sha384>(), &h384).unwrap();
                assert!(mont.verify(SHA384_PREFIX, &h384, &sig384));
                let h512 = Sha512::digest(msg);
                let sig512 = private.sign(Pkcs1v15Sign::new::<Sha512>(), &h512).unwrap();
                assert!(mont.verify(SHA512_PREFIX, &h512, &sig512));

                assert!(
                    !mont.verify(SHA384_PREFIX, &h256, &sig),
                    "wrong hash prefix"
                );
                let mut bad = sig.clone();
                bad[7] ^= 0x10;
                assert!(!mont.verify(SHA256_PREFIX, &h256, &bad));
                assert!(
                    !mont.verify(SHA256_PREFIX, &h256, &sig[1..]),
                    "short signature"
                );
                let n_bytes = key.n().to_bytes_be();
                assert!(
                    !mont.verify(SHA256_PREFIX, &h256, &n_bytes),
                    "signature equal to n"
                );
                assert!(
                    !mont.verify(SHA256_PREFIX, &h256, &vec![0xff; sig.len()]),
                    "above n"
                );
            }
        }
    }

    #[test]
    fn pss_agrees_with_the_rsa_crate() {
        use rsa::Pss;
        let mut rng = rand::rngs::StdRng::seed_from_u64(12);
        // 2049 bits: EM is one byte shorter than the modulus.
        for bits in [2048, 2049, 3072] {
            let private = RsaPrivateKey::new(&mut rng, bits).unwrap();
            let key = private.to_public_key();
            let mont = MontKey::new(&key).unwrap();
            for msg in [&b"a"[..], b"mesh-authn", &[7u8; 300]] {
                fn check<
                    D: Digest + sha2::digest::FixedOutputReset + Clone + Send + Sync + 'static,
                >(
                    rng: &mut rand::rngs::StdRng,
                    private: &RsaPrivateKey,
                    mont: &MontKey,
                    msg: &[u8],
                ) {
                    let hashed = D::digest(msg);
                    let sig = private
                        .sign_with_rng(rng, Pss::new::<D>(), &hashed)
                        .unwrap();
                    assert!(mont.verify_pss::<D>(&hashed, &sig));
                    let key = private.to_public_key();
                    for i in [0, 1, 5, sig.len() / 2, sig.len() - 2, sig.len() - 1] {
                        for bit in [0x01, 0x80] {
                            let mut bad = sig.clone();
                            bad[i] ^= bit;
                            let theirs = key.verify(Pss::new::<D>(), &hashed, &bad).is_ok();
                            assert_eq!(mont.verify_pss::<D>(&hashed, &bad), theirs, "byte {i}");
                        }
                    }
                    let mut other = hashed.to_vec();
                    other[0] ^= 1;
                    assert!(!mont.verify_pss::<D>(&other, &sig));
                    assert!(!mont.verify_pss::<D>(&hashed, &sig[1..]));
                    assert!(!mont.verify_pss::<D>(&hashed, &vec![0xff; sig.len()]));
                }
                check::<Sha256>(&mut rng, &private, &mont, msg);
                check::<Sha384>(&mut rng, &private, &mont, msg);
                check::<Sha512>(&mut rng, &private, &mont, msg);
            }
            // A PKCS#1 v1.5 signature is not a PSS signature.
            let h = Sha256::digest(b"x");
            let v15 = private.sign(Pkcs1v15Sign::new::<Sha256>(), &h).unwrap();
            assert!(!mont.verify_pss::<Sha256>(&h, &v15));
        }
    }

    #[test]
    fn squaring_matches_multiplication() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for bits in [2048, 2049, 3072] {
            let key = RsaPrivateKey::new(&mut rng, bits).unwrap().to_public_key();
            let mont = MontKey::new(&key).unwrap();
            let n = key.n();
            let top = n - BigUint::from(1u8);
            let mut samples = vec![BigUint::from(0u8), BigUint::from(1u8), top.clone()];
            for _ in 0..40 {
                let mut bytes = vec![0u8; mont.k];
                rand::RngCore::fill_bytes(&mut rng, &mut bytes);
                samples.push(BigUint::from_bytes_be(&bytes) % n);
            }
            for x in samples {
                let limbs_x = limbs(&x, mont.n.len());
                assert_eq!(
                    mont.sqr(&limbs_x),
                    mont.mul(&limbs_x, &limbs_x),
                    "{bits} {x}"
                );
            }
        }
    }

    #[test]
    fn odd_exponents_other_than_65537() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let private = RsaPrivateKey::new_with_exp(&mut rng, 2048, &BigUint::from(3u8)).unwrap();
        let mont = MontKey::new(&private.to_public_key()).unwrap();
        let h = Sha256::digest(b"e=3");
        let sig = private.sign(Pkcs1v15Sign::new::<Sha256>(), &h).unwrap();
        assert!(mont.verify(SHA256_PREFIX, &h, &sig));
    }
}
