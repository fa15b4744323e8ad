//! Peer authentication (Istio's PeerAuthentication): which mTLS mode applies to this workload,
//! and who the peer is.

mod identity;
mod policy;

pub use identity::spiffe_principal;
pub use policy::{
    resolve, validate, EffectivePolicy, Mode, Mtls, ObjectMeta, PeerAuthentication,
    PeerAuthenticationSpec, Selector, Workload,
};
