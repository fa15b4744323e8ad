//! Remote key sets (`jwksUri`): where each is fetched from, and the fetch state every worker
//! shares through the host's shared data.

pub mod discovery;
pub mod fetch;
mod uri;

pub use uri::{istio_cluster, parse_uri, ParsedUri, RemoteJwks};
