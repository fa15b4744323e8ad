//! The verified-token cache of one VM, like Envoy's `jwt_cache_config` but bounded by the memory
//! its entries hold: a signature is checked once per token; `exp` and `nbf` are checked on every
//! use; everything is forgotten when the keys change.
//!
//! Eviction is SIEVE (Zhang et al., NSDI '24): a hit only marks its entry; a hand walks from the
//! oldest entry towards the newest, unmarking marked ones and evicting the first unmarked. On
//! the many-users workload of `make bench` (Zipf 1.0 over 20 000 tokens) it keeps more hits than
//! FIFO, LRU and CLOCK at every size measured (`envoy-test/cache_policies.py`), and a hit costs a
//! flag, not LRU's relinking.

use std::collections::HashMap;
use std::mem::size_of;
use std::rc::Rc;

/// Seeded per process, and far cheaper than SipHash on kilobyte-long tokens; only verified tokens
/// are ever inserted, so an attacker cannot choose the keys.
type FastHash = foldhash::fast::RandomState;

use super::claims::Claims;

/// Longer tokens are verified every time rather than held in memory.
pub const MAX_CACHED_TOKEN_BYTES: usize = 4096;
const NIL: u32 = u32::MAX;

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
    fn bytes(&self) -> usize {
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

#[derive(Debug)]
struct Entry {
    token: Rc<str>,
    location: usize,
    verified: Rc<Verified>,
    bytes: usize,
    visited: bool,
    /// Towards the newest entry, and towards the oldest.
    newer: u32,
    older: u32,
}

/// What one entry costs besides its token and `Verified`: its slot, its index entry (a hash
/// table stays at most 7/8 full and doubles, so twice its slot), and the token's `Rc` counts.
const ENTRY_OVERHEAD: usize =
    size_of::<Option<Entry>>() + 2 * (size_of::<(Rc<str>, u32)>() + 1) + 2 * size_of::<usize>();

#[derive(Debug)]
pub struct TokenCache {
    budget: usize,
    max_entries: usize,
    used: usize,
    generation: u64,
    index: HashMap<Rc<str>, u32, FastHash>,
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    newest: u32,
    oldest: u32,
    /// The next eviction candidate; `NIL` starts from the oldest.
    hand: u32,
    pub hits: u64,
    pub misses: u64,
}

impl TokenCache {
    /// At most `budget` bytes (entries' own accounting) and `max_entries` entries; either 0
    /// disables it.
    pub fn new(budget: usize, max_entries: usize) -> Self {
        let max_entries = if budget == 0 {
            0
        } else {
            max_entries.min(u32::MAX as usize - 1)
        };
        Self {
            budget,
            max_entries,
            used: 0,
            generation: 0,
            index: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            hand: NIL,
            hits: 0,
            misses: 0,
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_entries > 0
    }

    /// Forgets everything when the key sets changed since the last call.
    pub fn keys_generation(&mut self, generation: u64) {
        if generation != self.generation {
            self.clear();
            self.generation = generation;
        }
    }

    pub fn clear(&mut self) {
        self.index = HashMap::default();
        self.slots = Vec::new();
        self.free = Vec::new();
        (self.newest, self.oldest, self.hand, self.used) = (NIL, NIL, NIL, 0);
    }

    /// A lookup, counted as a hit or a miss.
    pub fn get(&mut self, location: usize, token: &str) -> Option<&Rc<Verified>> {
        let slot = self.index.get(token).copied();
        match slot.and_then(|i| self.slots.get_mut(i as usize)?.as_mut()) {
            Some(e) if e.location == location => {
                self.hits += 1;
                e.visited = true;
                Some(&e.verified)
            }
            _ => {
                self.misses += 1;
                None
            }
        }
    }

    pub fn insert(&mut self, location: usize, token: &str, verified: Rc<Verified>) {
        let bytes = ENTRY_OVERHEAD + token.len() + verified.bytes();
        if !self.enabled()
            || token.len() > MAX_CACHED_TOKEN_BYTES
            || bytes > self.budget
            || self.index.contains_key(token)
        {
            return;
        }
        while self.index.len() >= self.max_entries || self.used + bytes > self.budget {
            if !self.evict() {
                return;
            }
        }
        let token: Rc<str> = token.into();
        let entry = Entry {
            token: Rc::clone(&token),
            location,
            verified,
            bytes,
            visited: false,
            newer: NIL,
            older: self.newest,
        };
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        if let Some(slot) = self.slots.get_mut(i as usize) {
            *slot = Some(entry);
        }
        match self.entry_mut(self.newest) {
            Some(newest) => newest.newer = i,
            None => self.oldest = i,
        }
        self.newest = i;
        self.used += bytes;
        self.index.insert(token, i);
    }

    pub fn remove(&mut self, token: &str) {
        if let Some(i) = self.index.get(token).copied() {
            self.unlink(i);
        }
    }

    /// Evicts one entry; false when there is none.
    fn evict(&mut self) -> bool {
        let mut i = if self.hand == NIL {
            self.oldest
        } else {
            self.hand
        };
        // Each step unmarks one entry, so this ends within two rounds.
        loop {
            let Some(e) = self.entry_mut(i) else {
                return false;
            };
            if !e.visited {
                break;
            }
            e.visited = false;
            i = if e.newer == NIL { self.oldest } else { e.newer };
        }
        self.hand = self.entry_mut(i).map_or(NIL, |e| e.newer);
        self.unlink(i);
        true
    }

    fn unlink(&mut self, i: u32) {
        let Some(e) = self.slots.get_mut(i as usize).and_then(Option::take) else {
            return;
        };
        match self.entry_mut(e.older) {
            Some(older) => older.newer = e.newer,
            None => self.oldest = e.newer,
        }
        match self.entry_mut(e.newer) {
            Some(newer) => newer.older = e.older,
            None => self.newest = e.older,
        }
        if self.hand == i {
            self.hand = e.newer;
        }
        self.index.remove(&e.token);
        self.free.push(i);
        self.used -= e.bytes;
    }

    fn entry_mut(&mut self, i: u32) -> Option<&mut Entry> {
        self.slots.get_mut(i as usize)?.as_mut()
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// What the entries hold, by the same accounting as the budget.
    pub fn bytes(&self) -> usize {
        self.used
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

    fn entry_bytes(token: &str) -> usize {
        ENTRY_OVERHEAD + token.len() + v(0).bytes()
    }

    fn tokens(c: &TokenCache) -> Vec<String> {
        let mut out = Vec::new();
        let mut i = c.oldest;
        while let Some(e) = c.slots.get(i as usize).and_then(Option::as_ref) {
            out.push(e.token.to_string());
            i = e.newer;
        }
        out
    }

    #[test]
    fn a_hit_survives_the_next_eviction_an_unvisited_entry_does_not() {
        let mut c = TokenCache::new(usize::MAX, 3);
        for t in ["a", "b", "c"] {
            c.insert(0, t, v(0));
        }
        assert!(c.get(0, "a").is_some());
        c.insert(0, "d", v(0));
        assert_eq!(tokens(&c), ["a", "c", "d"], "b evicted, a kept by its hit");
        assert!(c.get(0, "c").is_some() && c.get(0, "d").is_some());
        c.insert(0, "e", v(0));
        assert_eq!(
            tokens(&c),
            ["c", "d", "e"],
            "a's mark was spent on the first pass"
        );
        assert_eq!((c.hits, c.misses), (3, 0));
    }

    #[test]
    fn popular_tokens_stay_while_a_stream_of_new_ones_passes() {
        let mut c = TokenCache::new(usize::MAX, 64);
        for n in 0..10_000 {
            c.insert(0, &format!("cold-{n}"), v(0));
            for hot in 0..8 {
                let t = format!("hot-{hot}");
                if c.get(0, &t).is_none() {
                    c.insert(0, &t, v(0));
                }
            }
        }
        assert_eq!(
            c.misses, 8,
            "only the first request of each hot token missed"
        );
        assert_eq!(c.len(), 64);
    }

    #[test]
    fn bounded_by_bytes() {
        let one = entry_bytes("t-0000");
        let mut c = TokenCache::new(10 * one + one / 2, usize::MAX);
        for n in 0..1000 {
            c.insert(0, &format!("t-{n:04}"), v(0));
            assert!(c.bytes() <= 10 * one + one / 2);
        }
        assert_eq!((c.len(), c.bytes()), (10, 10 * one));
        let long = "x".repeat(MAX_CACHED_TOKEN_BYTES);
        let mut small = TokenCache::new(entry_bytes(&long) - 1, usize::MAX);
        small.insert(0, &long, v(0));
        assert!(
            small.is_empty(),
            "an entry larger than the budget is not cached"
        );
        let mut large = TokenCache::new(usize::MAX, usize::MAX);
        large.insert(0, &long, v(0));
        assert_eq!(large.bytes(), entry_bytes(&long));
        large.insert(0, &format!("{long}x"), v(0));
        assert_eq!(
            large.len(),
            1,
            "tokens over MAX_CACHED_TOKEN_BYTES are not cached"
        );
    }

    #[test]
    fn location_generation_remove_and_disabled() {
        let mut c = TokenCache::new(usize::MAX, 8);
        c.insert(1, "t", v(0));
        assert!(
            c.get(0, "t").is_none(),
            "another location is another verification"
        );
        assert!(c.get(1, "t").is_some());
        c.keys_generation(0);
        assert_eq!(c.len(), 1);
        c.keys_generation(7);
        assert!(c.is_empty() && c.bytes() == 0);
        for t in ["a", "b", "c"] {
            c.insert(1, t, v(0));
        }
        c.remove("b");
        assert_eq!(tokens(&c), ["a", "c"]);
        c.remove("a");
        c.remove("c");
        assert!(c.is_empty() && c.bytes() == 0 && tokens(&c).is_empty());
        c.insert(1, "d", v(0));
        assert_eq!(tokens(&c), ["d"], "freed slots are reused");
        assert_eq!(c.slots.len(), 3);
        for off in [TokenCache::new(0, 8), TokenCache::new(1 << 20, 0)] {
            let mut off = off;
            off.insert(0, "t", v(0));
            assert!(off.is_empty() && !off.enabled());
        }
    }

    #[test]
    fn removing_the_hand_moves_it_on() {
        let mut c = TokenCache::new(usize::MAX, 3);
        for t in ["a", "b", "c"] {
            c.insert(0, t, v(0));
        }
        c.get(0, "b");
        c.insert(0, "d", v(0));
        assert_eq!(tokens(&c), ["b", "c", "d"], "a evicted; the hand is at b");
        c.remove("b");
        c.insert(0, "e", v(0));
        c.insert(0, "f", v(0));
        assert_eq!(
            tokens(&c),
            ["d", "e", "f"],
            "the hand moved on to c, not to b's slot"
        );
    }
}
