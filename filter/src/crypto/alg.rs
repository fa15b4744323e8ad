//! The JWS signature algorithms this filter verifies, by their JOSE names (RFC 7518).

use super::key::KeyMaterial;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

impl Alg {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "PS256" => Self::Ps256,
            "PS384" => Self::Ps384,
            "PS512" => Self::Ps512,
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            "ES512" => Self::Es512,
            "EdDSA" => Self::EdDsa,
            "HS256" => Self::Hs256,
            "HS384" => Self::Hs384,
            "HS512" => Self::Hs512,
            _ => return None,
        })
    }

    /// Whether a key of this material may verify this algorithm. An HMAC algorithm never uses an
    /// asymmetric key's bytes, which closes the RS256→HS256 confusion attack.
    pub fn fits(self, key: &KeyMaterial) -> bool {
        matches!(
            (self, key),
            (
                Self::Rs256 | Self::Rs384 | Self::Rs512 | Self::Ps256 | Self::Ps384 | Self::Ps512,
                KeyMaterial::Rsa(_)
            ) | (Self::Es256, KeyMaterial::P256(_))
                | (Self::Es384, KeyMaterial::P384(_))
                | (Self::Es512, KeyMaterial::P521(_))
                | (Self::EdDsa, KeyMaterial::Ed25519(_))
                | (
                    Self::Hs256 | Self::Hs384 | Self::Hs512,
                    KeyMaterial::Hmac(_)
                )
        )
    }
}
