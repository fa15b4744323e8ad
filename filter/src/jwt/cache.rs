//! The verified-token cache of one VM, like Envoy's `jwt_cache_config` but bounded in entries and
//! in token size: a signature is checked once per token; `exp`, `nbf` and audiences are checked on
//! every use; everything is forgotten when the keys change.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

/// Seeded per process, and far cheaper than SipHash on kilobyte-long tokens; only verified tokens
/// are ever inserted, so an attacker cannot choose the keys.
type FastHash = foldhash::fast::RandomState;

use super::claims::Claims;

pub const DEFAULT_CAPACITY: usize = 1024;
/// Longer tokens are verified every time rather than held in memory.
pub const MAX_CACHED_TOKEN_BYTES: usize = 4096;

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

#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    generation: u64,
    /// Shared with the requests that hit them, so a hit copies nothing.
    entries: HashMap<Box<str>, (usize, Rc<Verified>), FastHash>,
    /// Insertion order, for first-in first-out eviction.
    order: VecDeque<Box<str>>,
    pub hits: u64,
    pub misses: u64,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            generation: 0,
            entries: HashMap::with_capacity_and_hasher(
                capacity.min(DEFAULT_CAPACITY),
                FastHash::default(),
            ),
            order: VecDeque::with_capacity(capacity.min(DEFAULT_CAPACITY)),
            hits: 0,
            misses: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Forgets everything when the key sets changed since the last call.
    pub fn keys_generation(&mut self, generation: u64) {
        if generation != self.generation {
            self.entries.clear();
            self.order.clear();
            self.generation = generation;
        }
    }

    /// A lookup, counted as a hit or a miss.
    pub fn get(&mut self, location: usize, token: &str) -> Option<&Rc<Verified>> {
        match self.entries.get(token) {
            Some((loc, v)) if *loc == location => {
                self.hits += 1;
                Some(v)
            }
            _ => {
                self.misses += 1;
                None
            }
        }
    }

    pub fn insert(&mut self, location: usize, token: &str, verified: Rc<Verified>) {
        if self.capacity == 0 || token.len() > MAX_CACHED_TOKEN_BYTES {
            return;
        }
        let key: Box<str> = token.into();
        if self
            .entries
            .insert(key.clone(), (location, verified))
            .is_some()
        {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }

    pub fn remove(&mut self, token: &str) {
        if self.entries.remove(token).is_some() {
            self.order.retain(|k| &**k != token);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(rule: usize) -> Rc<Verified> {
        Rc::new(Verified {
            rule,
            claims: Claims::default(),
            set: vec![],
            principal: None,
        })
    }

    #[test]
    fn bounded_first_in_first_out() {
        let mut c = TokenCache::new(2);
        c.insert(0, "a", v(1));
        c.insert(0, "b", v(2));
        c.insert(0, "a", v(3));
        assert_eq!(c.len(), 2);
        c.insert(0, "c", v(4));
        assert_eq!(c.len(), 2);
        assert!(c.get(0, "a").is_none());
        assert_eq!(c.get(0, "c").map(|x| x.rule), Some(4));
    }

    #[test]
    fn location_size_generation_and_disabled() {
        let mut c = TokenCache::new(8);
        c.insert(1, "t", v(0));
        assert!(
            c.get(0, "t").is_none(),
            "another location is another verification"
        );
        assert!(c.get(1, "t").is_some());
        c.insert(0, &"x".repeat(MAX_CACHED_TOKEN_BYTES + 1), v(0));
        assert_eq!(c.len(), 1);
        c.keys_generation(0);
        assert_eq!(c.len(), 1);
        c.keys_generation(7);
        assert!(c.is_empty());
        c.insert(1, "t", v(0));
        c.remove("t");
        assert!(c.is_empty() && c.order.is_empty());
        let mut off = TokenCache::new(0);
        off.insert(0, "t", v(0));
        assert!(off.is_empty());
    }
}
