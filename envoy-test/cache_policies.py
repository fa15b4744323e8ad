"""Hit ratios of cache eviction policies on the many-users workload of `make bench`.

    python envoy-test/cache_policies.py [--users 20000] [--zipf-s 1.0] [--requests 800000]

Replays one Zipf-distributed request stream (the same popularity law as envoy-test/bench_zipf.lua)
through FIFO (this filter's cache before), LRU (Envoy's jwt_authn cache), CLOCK and SIEVE (this
filter's cache now) at several sizes, and prints the hit ratio of each after a warm-up quarter.
Hit ratios depend only on the policy and the stream, so a simulation measures them exactly; what
a hit costs is measured in Envoy by `make bench`.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import random
from collections import OrderedDict, deque


def zipf_stream(users: int, s: float, count: int, seed: int = 1) -> list[int]:
    cdf = list(itertools.accumulate(1 / rank**s for rank in range(1, users + 1)))
    rng = random.Random(seed)
    return [min(bisect.bisect_left(cdf, rng.random() * cdf[-1]), users - 1) for _ in range(count)]


def fifo(stream, capacity):
    cached, order = set(), deque()
    for key in stream:
        if key in cached:
            yield True
            continue
        yield False
        cached.add(key)
        order.append(key)
        if len(order) > capacity:
            cached.discard(order.popleft())


def lru(stream, capacity):
    cached = OrderedDict()
    for key in stream:
        if key in cached:
            cached.move_to_end(key)
            yield True
            continue
        yield False
        cached[key] = None
        if len(cached) > capacity:
            cached.popitem(last=False)


def clock(stream, capacity):
    keys, referenced, slot_of, hand = [], [], {}, 0
    for key in stream:
        slot = slot_of.get(key)
        if slot is not None:
            referenced[slot] = True
            yield True
            continue
        yield False
        if len(keys) < capacity:
            slot_of[key] = len(keys)
            keys.append(key)
            referenced.append(False)
            continue
        while referenced[hand]:
            referenced[hand] = False
            hand = (hand + 1) % capacity
        del slot_of[keys[hand]]
        keys[hand], referenced[hand], slot_of[key] = key, False, hand
        hand = (hand + 1) % capacity


def sieve(stream, capacity):
    """As filter/src/jwt/cache/mod.rs: the hand walks from the oldest towards the newest and wraps."""
    visited, newer, older = {}, {}, {}
    newest = oldest = hand = None
    for key in stream:
        if key in visited:
            visited[key] = True
            yield True
            continue
        yield False
        if len(visited) >= capacity:
            victim = hand if hand is not None else oldest
            while visited[victim]:
                visited[victim] = False
                victim = newer[victim] if newer[victim] is not None else oldest
            hand = newer[victim]
            before, after = older[victim], newer[victim]
            if before is None:
                oldest = after
            else:
                newer[before] = after
            if after is None:
                newest = before
            else:
                older[after] = before
            del visited[victim], newer[victim], older[victim]
        visited[key], newer[key], older[key] = False, None, newest
        if newest is not None:
            newer[newest] = key
        newest = key
        if oldest is None:
            oldest = key


POLICIES = {"FIFO": fifo, "LRU": lru, "CLOCK": clock, "SIEVE": sieve}


def hit_ratio(policy, stream: list[int], capacity: int) -> float:
    warm = len(stream) // 4
    hits = sum(itertools.islice(policy(stream, capacity), warm, None))
    return hits / (len(stream) - warm)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--zipf-s", type=float, default=1.0)
    ap.add_argument("--requests", type=int, default=800_000)
    ap.add_argument("--sizes", default="100,1024,4096,8192", help="cache sizes, in entries")
    args = ap.parse_args()
    stream = zipf_stream(args.users, args.zipf_s, args.requests)
    print(f"hit ratio, Zipf s={args.zipf_s} over {args.users} tokens, {args.requests} requests "
          "(the first quarter warms the cache)")
    print(f"{'entries':>8}" + "".join(f"{name:>8}" for name in POLICIES))
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"{size:>8}" + "".join(f"{hit_ratio(p, stream, size):>8.3f}" for p in POLICIES.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
