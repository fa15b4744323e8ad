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
            fn check<D: Digest + sha2::digest::FixedOutputReset + Clone + Send + Sync + 'static>(
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
