use super::*;
use std::collections::HashMap;

/// Shared data as Envoy keeps it, a version per entry bumped by each write; the unit tests' one
/// fake of it (the runtime's fake host has its own, behind the host calls).
#[derive(Default)]
pub(crate) struct Mem(pub HashMap<String, (Vec<u8>, u32)>, pub usize);

impl SharedStore for Mem {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.get(key).cloned()
    }
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        let current = self.0.get(key).map_or(0, |(_, c)| *c);
        if cas != 0 && cas != current {
            return false;
        }
        // `.1` times, another worker's write lands between the caller's read and its swap.
        if self.1 > 0 {
            self.1 -= 1;
            if let Some(entry) = self.0.get_mut(key) {
                entry.1 += 1;
            }
            return false;
        }
        self.0
            .insert(key.to_string(), (value.to_vec(), current + 1));
        true
    }
}

/// Shared data as a plugin's configuration leaves it.
fn configured() -> Mem {
    let mut m = Mem::default();
    Source::ensure_record(&spec(), &mut m);
    m
}

#[test]
fn the_first_poll_without_a_record_creates_it_and_claims_nothing() {
    let (s, mut store) = (spec(), Mem::default());
    let (mut a, mut b) = (Source::default(), Source::default());
    assert_eq!(a.poll(&s, &mut store, 0), Poll::Idle);
    // The entry exists now: a claim is a compare-and-swap, and only one worker wins.
    assert_eq!(b.poll(&s, &mut store, 1), Poll::Fetch);
    assert_eq!(a.poll(&s, &mut store, 2), Poll::Idle);
}

fn spec() -> RemoteJwks {
    RemoteJwks {
        uri: "http://idp/jwks".into(),
        cluster: "jwks".into(),
        authority: "idp".into(),
        path: "/jwks".into(),
        timeout_ms: 5_000,
        cache_duration_s: 600,
        discovery: false,
        jwks_cluster: None,
    }
}

const GOOD: &[u8] = br#"{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0"}]}"#;
const ROTATED: &[u8] = br#"{"keys":[{"kty":"oct","kid":"b","k":"c2VjcmV0"}]}"#;

#[test]
fn one_worker_fetches_others_adopt() {
    let (s, mut store) = (spec(), configured());
    let (mut a, mut b) = (Source::default(), Source::default());
    assert_eq!(a.poll(&s, &mut store, 1_000), Poll::Fetch);
    assert_eq!(b.poll(&s, &mut store, 1_001), Poll::Idle, "lease is held");
    assert_eq!(
        a.poll(&s, &mut store, 1_002),
        Poll::Idle,
        "already in flight"
    );
    let t = b.ticket(&s, false, 1_001);
    assert!(!b.ready(&t, 1_002));
    assert_eq!(
        a.complete(&s, &mut store, 1_100, Ok(GOOD)),
        Outcome::Published {
            keys: 1,
            cut_from: None
        }
    );
    assert_eq!(b.poll(&s, &mut store, 1_200), Poll::Idle);
    assert!(b.keys.is_some() && b.ready(&t, 1_200));
    assert_eq!(a.poll(&s, &mut store, 2_000), Poll::Idle, "fresh keys");
}

#[test]
fn refreshes_before_expiry_once() {
    let (s, mut store) = (spec(), configured());
    let (mut a, mut b) = (Source::default(), Source::default());
    assert_eq!(a.poll(&s, &mut store, 0), Poll::Fetch);
    a.complete(&s, &mut store, 0, Ok(GOOD));
    assert_eq!(b.poll(&s, &mut store, 569_999), Poll::Idle);
    assert_eq!(b.poll(&s, &mut store, 570_000), Poll::Fetch);
    assert_eq!(a.poll(&s, &mut store, 570_001), Poll::Idle);
}

#[test]
fn failures_keep_good_keys_and_back_off() {
    let (s, mut store) = (spec(), configured());
    let mut a = Source::default();
    assert_eq!(a.poll(&s, &mut store, 0), Poll::Fetch);
    a.complete(&s, &mut store, 0, Ok(GOOD));
    let mut now = 570_000;
    let mut expected_backoff = vec![1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000];
    expected_backoff.reverse();
    for bad in [
        Err("status 500".to_string()),
        Ok(&b"garbage"[..]),
        Ok(&b"{\"keys\":[]}"[..]),
    ]
    .into_iter()
    .cycle()
    .take(7)
    {
        assert_eq!(a.poll(&s, &mut store, now), Poll::Fetch, "at {now}");
        let Outcome::Failed { retry_in_ms, .. } = a.complete(&s, &mut store, now, bad) else {
            panic!("bad body accepted");
        };
        assert_eq!(Some(retry_in_ms), expected_backoff.pop());
        assert_eq!(a.poll(&s, &mut store, now + retry_in_ms - 1), Poll::Idle);
        assert!(a
            .keys
            .as_ref()
            .is_some_and(|k| k.keys[0].kid.as_deref() == Some("a")));
        assert!(!a.failed());
        now += retry_in_ms;
    }
    assert_eq!(a.poll(&s, &mut store, now), Poll::Fetch);
    a.complete(&s, &mut store, now, Ok(ROTATED));
    assert_eq!(a.record.failures, 0);
    assert!(a
        .keys
        .as_ref()
        .is_some_and(|k| k.keys[0].kid.as_deref() == Some("b")));
}

#[test]
fn never_loaded_then_failed_then_recovers() {
    let (s, mut store) = (spec(), configured());
    let (mut a, mut b) = (Source::default(), Source::default());
    assert_eq!(a.poll(&s, &mut store, 0), Poll::Fetch);
    let t = b.ticket(&s, false, 0);
    a.complete(&s, &mut store, 10, Err("connection refused".into()));
    b.sync(&s, &store);
    assert!(a.failed() && b.failed());
    assert!(b.ready(&t, 11));
    assert_eq!(b.poll(&s, &mut store, 500), Poll::Idle, "backing off");
    assert_eq!(b.poll(&s, &mut store, 1_010), Poll::Fetch);
    b.complete(&s, &mut store, 1_020, Ok(GOOD));
    a.sync(&s, &store);
    assert!(!a.failed() && a.keys.is_some());
}

#[test]
fn unknown_kid_refetch_is_rate_limited() {
    let (s, mut store) = (spec(), configured());
    let mut a = Source::default();
    a.poll(&s, &mut store, 0);
    a.complete(&s, &mut store, 0, Ok(GOOD));
    assert!(a.may_refetch(40_000));
    a.want_refetch = true;
    let t = a.ticket(&s, true, 40_000);
    assert_eq!(a.poll(&s, &mut store, 40_000), Poll::Fetch);
    assert!(!a.ready(&t, 40_001), "refetch waiters wait for the fetch");
    a.complete(&s, &mut store, 40_100, Ok(ROTATED));
    assert!(a.ready(&t, 40_101));
    assert!(!a.want_refetch);
    assert!(!a.may_refetch(60_000));
    a.want_refetch = true;
    assert_eq!(a.poll(&s, &mut store, 60_000), Poll::Idle);
    assert!(a.may_refetch(70_000));
}

#[test]
fn lease_expires_when_holder_vanishes() {
    let (s, mut store) = (spec(), configured());
    let (mut a, mut b) = (Source::default(), Source::default());
    assert_eq!(a.poll(&s, &mut store, 0), Poll::Fetch);
    let t = b.ticket(&s, false, 0);
    assert_eq!(b.poll(&s, &mut store, 5_999), Poll::Idle);
    assert!(b.ready(&t, 6_000), "waiter deadline");
    assert_eq!(b.poll(&s, &mut store, 6_000), Poll::Fetch);
}

#[test]
fn backoff_doubles_and_caps() {
    let got: Vec<u64> = (1..=8).map(backoff_ms).collect();
    assert_eq!(
        got,
        [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
    );
    assert_eq!(backoff_ms(u32::MAX), BACKOFF_MAX_MS);
}

#[test]
fn a_fleet_spreads_its_refreshes_and_retries_within_a_tenth() {
    let s = spec();
    let nominal = refresh_after_ms(&s);
    let (mut refresh, mut retry) = (Vec::new(), Vec::new());
    for seed in 0..1_000u64 {
        let mut store = configured();
        let mut w = Source {
            jitter: Jitter::seeded(seed.wrapping_mul(0x2545_F491_4F6C_DD1D)),
            ..Source::default()
        };
        assert_eq!(w.poll(&s, &mut store, 0), Poll::Fetch);
        let Outcome::Failed { retry_in_ms, .. } =
            w.complete(&s, &mut store, 0, Err("refused".into()))
        else {
            panic!("a failure")
        };
        retry.push(retry_in_ms);
        assert_eq!(w.poll(&s, &mut store, retry_in_ms), Poll::Fetch);
        w.complete(&s, &mut store, retry_in_ms, Ok(GOOD));
        let at = w.record.refresh_at_ms - retry_in_ms;
        refresh.push(at);
        assert_eq!(w.poll(&s, &mut store, retry_in_ms + at - 1), Poll::Idle);
        assert_eq!(w.poll(&s, &mut store, retry_in_ms + at), Poll::Fetch);
    }
    let span = |v: &[u64]| (*v.iter().min().unwrap(), *v.iter().max().unwrap());
    let (lo, hi) = span(&refresh);
    assert!(
        lo >= nominal - nominal / 10 && hi <= nominal,
        "never later than before"
    );
    assert!(
        hi - lo > nominal / 12,
        "spread over most of the window: {lo}..{hi}"
    );
    let (lo, hi) = span(&retry);
    assert!(lo >= 900 && hi <= 1_100, "{lo}..{hi}");
    assert!(hi - lo > 160, "{lo}..{hi}");
    let mut distinct = refresh.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(
        distinct.len() > 900,
        "{} distinct refresh times",
        distinct.len()
    );
}

#[test]
fn jitter_is_reproducible_and_off_by_default() {
    let (mut a, mut b) = (Jitter::seeded(42), Jitter::seeded(42));
    let xs: Vec<u64> = (0..5).map(|_| a.around(10_000)).collect();
    let ys: Vec<u64> = (0..5).map(|_| b.around(10_000)).collect();
    assert_eq!(xs, ys);
    assert!(xs.iter().all(|x| (9_000..=11_000).contains(x)));
    let mut off = Jitter::default();
    assert_eq!((off.around(10_000), off.at_most(10_000)), (10_000, 10_000));
    assert_eq!(
        Jitter::seeded(7).around(9),
        9,
        "under ten milliseconds nothing moves"
    );
}
