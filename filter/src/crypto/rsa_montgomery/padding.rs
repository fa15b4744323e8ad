//! The signature encodings checked after the public operation: PKCS#1 v1.5 (with its DigestInfo
//! prefixes) and EMSA-PSS.

use sha2::Digest;

use super::MontKey;

impl MontKey {
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
