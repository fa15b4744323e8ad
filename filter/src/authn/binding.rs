//! Sender-constrained tokens: a rule's `certificateBinding` (RFC 8705 §3) checked against the
//! connection, on every request, cache hits included.

use crate::config::Binding;
use crate::error::AuthError;
use crate::jwt::confirmation::Thumbprint;

/// A verified token's `x5t#S256` against the certificate this connection presented.
pub(super) fn check_certificate(
    mode: Binding,
    x5t_s256: &Thumbprint,
    presented: Option<&[u8; 32]>,
) -> Result<(), AuthError> {
    match (mode, x5t_s256) {
        (Binding::Optional, Thumbprint::Absent) => Ok(()),
        (_, Thumbprint::Absent | Thumbprint::Malformed) => {
            Err(AuthError::CertificateBindingMissing)
        }
        (_, bound) if presented.is_some_and(|d| bound.matches(d)) => Ok(()),
        _ => Err(AuthError::CertificateBindingMismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_binding() {
        use Binding::{Optional, Required};
        let (mine, other) = ([1u8; 32], [2u8; 32]);
        let bound = Thumbprint::Sha256(mine);
        let missing = Err(AuthError::CertificateBindingMissing);
        let mismatch = Err(AuthError::CertificateBindingMismatch);
        for (mode, cnf, presented, want) in [
            (Required, bound, Some(&mine), Ok(())),
            (Optional, bound, Some(&mine), Ok(())),
            (Required, bound, Some(&other), mismatch),
            (Optional, bound, Some(&other), mismatch),
            (Required, bound, None, mismatch),
            (Optional, bound, None, mismatch),
            (Required, Thumbprint::Absent, Some(&mine), missing),
            (Optional, Thumbprint::Absent, Some(&mine), Ok(())),
            (Optional, Thumbprint::Absent, None, Ok(())),
            (Required, Thumbprint::Malformed, Some(&mine), missing),
            (Optional, Thumbprint::Malformed, Some(&mine), missing),
        ] {
            assert_eq!(
                check_certificate(mode, &cnf, presented),
                want,
                "{mode:?} {cnf:?} {presented:?}"
            );
        }
    }
}
