//! The last token seen and what was computed from it (its cache digest, its DPoP `ath`):
//! consecutive requests on a worker mostly carry the token before them, and comparing costs less
//! than computing again. Exact: the token is kept and compared whole, and at most
//! `MAX_CACHED_TOKEN_BYTES` of it.

use super::MAX_CACHED_TOKEN_BYTES;

#[derive(Debug)]
pub struct LastToken<T> {
    token: String,
    value: Option<T>,
}

impl<T> Default for LastToken<T> {
    fn default() -> Self {
        Self {
            token: String::new(),
            value: None,
        }
    }
}

impl<T: Copy> LastToken<T> {
    /// `compute(token)`, or what it gave for this same token last time.
    pub fn get_or(&mut self, token: &str, compute: impl FnOnce(&str) -> T) -> T {
        if let Some(v) = self.value.filter(|_| same(&self.token, token)) {
            return v;
        }
        let v = compute(token);
        if token.len() <= MAX_CACHED_TOKEN_BYTES {
            self.token.clear();
            self.token.push_str(token);
            self.value = Some(v);
        }
        v
    }

    #[cfg(test)]
    pub fn kept(&self) -> Option<(&str, T)> {
        self.value.map(|v| (self.token.as_str(), v))
    }
}

/// Equality eight bytes at a time: wasm32's `memcmp` compares byte by byte, slower than digesting
/// the token.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (wa, wb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail = wa.remainder() == wb.remainder();
    let word = |c: &[u8]| c.try_into().map_or(0, u64::from_ne_bytes);
    tail && wa.zip(wb).all(|(x, y)| word(x) == word(y))
}
