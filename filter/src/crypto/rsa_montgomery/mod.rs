//! RSA signature verification (RS256/384/512: PKCS#1 v1.5; PS256/384/512: PSS) with a Montgomery
//! exponentiation prepared once per key: the general-purpose bignum of the `rsa` crate spends
//! ~250 µs per verify natively, this one a fraction of that, which matters when signatures are
//! checked inside the VM.

mod padding;

#[cfg(test)]
mod tests;

use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};

pub use padding::{SHA256_PREFIX, SHA384_PREFIX, SHA512_PREFIX};

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
}

fn less_than(a: &[u32], b: &[u32]) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x < y;
        }
    }
    false
}
