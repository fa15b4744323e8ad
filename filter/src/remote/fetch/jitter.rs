//! Jitter for refreshes and retries, so that workers configured at once do not fetch in step.

/// Spreads refreshes and retries so that a fleet configured at once does not call the identity
/// provider in step: a seeded generator (SplitMix64) per worker and key set. Unseeded, it
/// spreads nothing (unit tests that count milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        if self.0 == 0 {
            return 0;
        }
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Up to a tenth of `ms` either way.
    pub fn around(&mut self, ms: u64) -> u64 {
        let tenth = ms / 10;
        if self.0 == 0 || tenth == 0 {
            return ms;
        }
        ms - tenth + self.next() % (2 * tenth + 1)
    }

    /// Up to a tenth of `ms` earlier, never later.
    pub fn at_most(&mut self, ms: u64) -> u64 {
        let tenth = ms / 10;
        if self.0 == 0 || tenth == 0 {
            return ms;
        }
        ms - self.next() % (tenth + 1)
    }
}
