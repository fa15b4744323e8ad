//! What the cache holds for one token: the result of its verification, and the memory it takes.

use std::mem::size_of;

use crate::jwt::claims::Claims;

/// What a successful verification of one token at one location produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub rule: usize,
    pub claims: Claims,
    /// Output headers for this token: payload and claims.
    pub set: Vec<(String, String)>,
    /// `<iss>/<sub>`.
    pub principal: Option<String>,
}

impl Verified {
    /// The heap this value holds, itself included.
    pub(super) fn bytes(&self) -> usize {
        let c = &self.claims;
        let strings = [&c.iss, &c.sub, &self.principal]
            .into_iter()
            .flatten()
            .map(String::capacity)
            .sum::<usize>()
            + c.aud.iter().map(String::capacity).sum::<usize>()
            + self
                .set
                .iter()
                .map(|(k, v)| k.capacity() + v.capacity())
                .sum::<usize>();
        // The `Rc` allocation holds two counts besides the value.
        2 * size_of::<usize>()
            + size_of::<Self>()
            + strings
            + c.aud.capacity() * size_of::<String>()
            + self.set.capacity() * size_of::<(String, String)>()
    }
}
