use super::*;
use crate::jwt::claims::Claims;

fn v(rule: usize) -> Rc<Verified> {
    Rc::new(Verified {
        rule,
        claims: Claims::default(),
        set: vec![],
        principal: None,
    })
}

fn entry_bytes() -> usize {
    ENTRY_OVERHEAD + v(0).bytes()
}

/// The entries' digests, oldest first.
fn tokens(c: &TokenCache) -> Vec<Digest> {
    let mut out = Vec::new();
    let mut i = c.oldest;
    while let Some(e) = c.slots.get(i as usize).and_then(Option::as_ref) {
        out.push(e.digest);
        i = e.newer;
    }
    out
}

fn digests(c: &TokenCache, tokens: &[&str]) -> Vec<Digest> {
    tokens.iter().map(|t| c.key.digest(t)).collect()
}

#[test]
fn a_hit_survives_the_next_eviction_an_unvisited_entry_does_not() {
    let mut c = TokenCache::new(usize::MAX, 3);
    for t in ["a", "b", "c"] {
        c.insert(0, t, v(0));
    }
    assert!(c.get(0, "a").is_some());
    c.insert(0, "d", v(0));
    assert_eq!(
        tokens(&c),
        digests(&c, &["a", "c", "d"]),
        "b evicted, a kept by its hit"
    );
    assert!(c.get(0, "c").is_some() && c.get(0, "d").is_some());
    c.insert(0, "e", v(0));
    assert_eq!(
        tokens(&c),
        digests(&c, &["c", "d", "e"]),
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
    let one = entry_bytes();
    let mut c = TokenCache::new(10 * one + one / 2, usize::MAX);
    for n in 0..1000 {
        c.insert(0, &format!("t-{n:04}"), v(0));
        assert!(c.bytes() <= 10 * one + one / 2);
    }
    assert_eq!((c.len(), c.bytes()), (10, 10 * one));
    let big = Rc::new(Verified {
        set: vec![("x-payload".into(), "x".repeat(3000))],
        ..(*v(0)).clone()
    });
    let mut small = TokenCache::new(ENTRY_OVERHEAD + big.bytes() - 1, usize::MAX);
    small.insert(0, "t", Rc::clone(&big));
    assert!(
        small.is_empty(),
        "an entry larger than the budget is not cached"
    );
    let long = "x".repeat(MAX_CACHED_TOKEN_BYTES);
    let mut large = TokenCache::new(usize::MAX, usize::MAX);
    large.insert(0, &long, v(0));
    assert_eq!(large.bytes(), one, "the token itself is not kept");
    large.insert(0, &format!("{long}x"), v(0));
    assert_eq!(
        large.len(),
        1,
        "tokens over MAX_CACHED_TOKEN_BYTES are not cached"
    );
}

#[test]
fn a_token_hits_its_own_entry_and_no_other() {
    let mut c = TokenCache::new(usize::MAX, usize::MAX);
    let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln";
    c.insert(0, token, v(7));
    for other in [
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lu",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2l",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnA",
        "EyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln",
        "",
    ] {
        assert!(c.get(0, other).is_none(), "{other}");
    }
    assert_eq!(c.get(0, token).map(|h| h.rule), Some(7));
    // Each cache draws its own key: a digest learnt from one says nothing of another's.
    let d = TokenCache::new(usize::MAX, usize::MAX);
    assert_ne!(c.key.digest(token), d.key.digest(token));
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
    assert_eq!(tokens(&c), digests(&c, &["a", "c"]));
    c.remove("a");
    c.remove("c");
    assert!(c.is_empty() && c.bytes() == 0 && tokens(&c).is_empty());
    c.insert(1, "d", v(0));
    assert_eq!(tokens(&c), digests(&c, &["d"]), "freed slots are reused");
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
    assert_eq!(
        tokens(&c),
        digests(&c, &["b", "c", "d"]),
        "a evicted; the hand is at b"
    );
    c.remove("b");
    c.insert(0, "e", v(0));
    c.insert(0, "f", v(0));
    assert_eq!(
        tokens(&c),
        digests(&c, &["d", "e", "f"]),
        "the hand moved on to c, not to b's slot"
    );
}

#[test]
fn the_remembered_digest_is_the_last_tokens_own() {
    let mut c = TokenCache::new(usize::MAX, usize::MAX);
    assert_eq!(c.last.kept(), None);
    assert!(c.get(0, "").is_none(), "nothing kept is no token's digest");
    let (a, b) = ("aaaa.bbbb.cccc", "aaaa.bbbb.cccd");
    c.insert(0, a, v(1));
    for _ in 0..3 {
        assert_eq!(c.get(0, a).map(|h| h.rule), Some(1));
        assert_eq!(c.get(0, a).map(|h| h.rule), Some(1));
        assert!(c.get(0, b).is_none() && c.get(0, b).is_none());
    }
    assert_eq!(c.last.kept(), Some((b, c.key.digest(b))));
    let long = "x".repeat(MAX_CACHED_TOKEN_BYTES + 1);
    assert!(c.get(0, &long).is_none());
    assert_eq!(
        c.last.kept().map(|k| k.0),
        Some(b),
        "a token too long to cache is not kept here either"
    );
    c.remove(a);
    assert!(c.get(0, a).is_none() && c.last.kept().map(|k| k.0) == Some(a));
}
