//! The header changes a request that is let through carries to the upstream.

use std::rc::Rc;

use smallvec::SmallVec;

use crate::jwt::cache::Verified;

/// Header changes applied to a request that is let through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forward {
    /// Removed first: every output header (so none is forged) and token headers not forwarded;
    /// mostly the one token header, kept without allocating.
    pub remove: SmallVec<[String; 1]>,
    /// The verified tokens, whose output headers are set first, shared with the cache.
    pub verified: Vec<Rc<Verified>>,
    /// Then these: the principals.
    pub set: Vec<(String, String)>,
    /// The new `:path` when query parameters that carried verified tokens are removed from it.
    pub path: Option<String>,
}

impl Forward {
    /// Every header to set, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.writes().map(|(k, v, _)| (k, v))
    }

    /// Every header to write, in order, and whether it is another copy of the one before (the
    /// elements of a space-delimited claim, which follow each other in their token's headers) rather
    /// than a value that replaces any other.
    pub fn writes(&self) -> impl Iterator<Item = (&str, &str, bool)> {
        self.verified
            .iter()
            .flat_map(|v| copies(&v.set))
            .chain(copies(&self.set))
    }
}

/// `(name, value, copy)`: `copy` when the header before had the same name.
fn copies(set: &[(String, String)]) -> impl Iterator<Item = (&str, &str, bool)> {
    set.iter()
        .scan(None, |previous: &mut Option<&str>, (k, v)| {
            let copy = *previous == Some(k.as_str());
            *previous = Some(k.as_str());
            Some((k.as_str(), v.as_str(), copy))
        })
}
