//! JSON Web Tokens: compact JWS parsing, registered claims, key sets, and the cache of tokens
//! already verified.

pub mod cache;
pub mod claim_header;
pub mod claims;
pub mod confirmation;
pub mod dpop;
pub mod jwks;
pub mod jws;
pub mod subject;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;

/// base64url, padding optional, non-canonical trailing bits refused.
pub const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
