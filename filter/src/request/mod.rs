//! The request as the filter sees it: a read-only view of its headers (pseudo-headers included)
//! as the host hands them over, the connection it came on, where tokens are in it, and which
//! paths trigger authentication.

pub mod path;
pub mod token;
pub mod trigger;
pub mod wire;

use std::ops::Range;

#[derive(Debug, Clone, Default)]
pub struct Request {
    /// All header names and values, back to back; `headers` indexes into it.
    text: String,
    headers: Vec<(Range<usize>, Range<usize>)>,
    connection: Connection,
}

/// What the host knows of the downstream connection (read only when the policy needs it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// A client certificate was presented (Envoy's `connection.mtls`). Whether it was validated is
    /// the listener's business: it must require and verify client certificates (README, "Listener
    /// requirements").
    pub mtls: bool,
    /// The connection is TLS (its handshake may not have finished); read by NETWORK plugins only.
    pub tls: bool,
    /// The workload port the connection came in on.
    pub port: Option<u32>,
    /// The peer certificate's first URI SAN.
    pub uri_san: Option<String>,
    /// The SHA-256 of the client certificate's DER, when a rule binds tokens to it.
    pub certificate_sha256: Option<[u8; 32]>,
}

impl Connection {
    /// Envoy's `connection.sha256_peer_certificate_digest`: 64 hex digits, or empty without a
    /// client certificate.
    pub fn digest_from_hex(hex: &[u8]) -> Option<[u8; 32]> {
        if hex.len() != 64 {
            return None;
        }
        let digit = |c: &u8| char::from(*c).to_digit(16);
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let [hi, lo] = pair else {
                return None;
            };
            *byte = u8::try_from(digit(hi)? * 16 + digit(lo)?).ok()?;
        }
        Some(out)
    }
}

impl Request {
    /// Header names are expected lowercase, as Envoy presents them.
    pub fn new(headers: Vec<(String, String)>) -> Self {
        let mut text = String::new();
        let mut ranges = Vec::with_capacity(headers.len());
        for (k, v) in &headers {
            let k_at = text.len()..text.len() + k.len();
            text.push_str(k);
            let v_at = text.len()..text.len() + v.len();
            text.push_str(v);
            ranges.push((k_at, v_at));
        }
        Self {
            text,
            headers: ranges,
            connection: Connection::default(),
        }
    }

    /// From the host's encoded header map, without copying it when its names and values are
    /// valid UTF-8 (they nearly always are); otherwise invalid bytes become U+FFFD, which can
    /// never form a valid token.
    pub fn from_wire(mut bytes: Vec<u8>) -> Option<Self> {
        let ranges = wire::map_ranges(&bytes)?;
        // The length table before the names is binary (a length byte of 0x80 or more is not
        // UTF-8): blanked, so that only the names and values decide.
        let table = ranges.first().map_or(bytes.len(), |(k, _)| k.start);
        if let Some(t) = bytes.get_mut(..table) {
            t.fill(0);
        }
        match String::from_utf8(bytes) {
            Ok(text)
                if ranges.iter().all(|(k, v)| {
                    text.get(k.clone()).is_some() && text.get(v.clone()).is_some()
                }) =>
            {
                Some(Self {
                    text,
                    headers: ranges,
                    connection: Connection::default(),
                })
            }
            Ok(text) => Some(Self::new(wire::decode_ranges(text.as_bytes(), ranges))),
            Err(e) => Some(Self::new(wire::decode_ranges(e.as_bytes(), ranges))),
        }
    }

    pub fn with_connection(mut self, connection: Connection) -> Self {
        self.connection = connection;
        self
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    pub fn header_values<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.headers.iter().filter_map(move |(k, v)| {
            (self.text.get(k.clone())? == name)
                .then(|| self.text.get(v.clone()))
                .flatten()
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).next()
    }

    pub fn path(&self) -> &str {
        self.header(":path").unwrap_or("/")
    }

    /// CORS preflight, which browsers send without credentials.
    pub fn is_cors_preflight(&self) -> bool {
        self.header(":method") == Some("OPTIONS")
            && self.header("origin").is_some_and(|v| !v.is_empty())
            && self
                .header("access-control-request-method")
                .is_some_and(|v| !v.is_empty())
    }

    /// The request's URI without query, for `WWW-Authenticate: Bearer realm=…`, as Envoy builds it.
    pub fn realm(&self) -> String {
        const MAX_PATH: usize = 256;
        let scheme = self
            .header("x-forwarded-proto")
            .or(self.header(":scheme"))
            .filter(|s| matches!(*s, "http" | "https"))
            .unwrap_or("http");
        let host = self
            .header(":authority")
            .or(self.header("host"))
            .unwrap_or("");
        let path = strip_query(self.path());
        let mut end = path.len().min(MAX_PATH);
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        let uri = format!("{scheme}://{host}{}", path.get(..end).unwrap_or(""));
        uri.chars()
            .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
            .collect()
    }
}

/// The path part of `:path`, without query or fragment.
pub fn strip_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(h: &[(&str, &str)]) -> Request {
        Request::new(
            h.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn certificate_digests_are_64_hex_digits() {
        let hex = "00ff10A0".repeat(8);
        let d = Connection::digest_from_hex(hex.as_bytes());
        assert_eq!(
            d.map(|d| d[..4].to_vec()),
            Some(vec![0x00, 0xff, 0x10, 0xa0])
        );
        for bad in [
            "",
            "00",
            &"0".repeat(63),
            &"0".repeat(65),
            &format!("+f{}", "0".repeat(62)),
        ] {
            assert_eq!(Connection::digest_from_hex(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn realm_is_uri_without_query() {
        let r = req(&[
            (":scheme", "http"),
            (":authority", "h:8080"),
            (":path", "/a?access_token=x"),
        ]);
        assert_eq!(r.realm(), "http://h:8080/a");
        let r = req(&[
            (":scheme", "javascript"),
            (":authority", "h\"x"),
            (":path", "/é"),
        ]);
        assert_eq!(r.realm(), "http://hx/é");
        let long = format!("/{}", "é".repeat(300));
        let r = req(&[(":authority", "h"), (":path", &long)]);
        assert!(r.realm().len() <= "http://h".len() + 256);
    }

    #[test]
    fn from_wire_matches_new() {
        let pairs = [
            (":path", "/a?b"),
            ("authorization", "Bearer x"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ];
        let r = Request::from_wire(wire::encode_map(&pairs)).unwrap();
        assert_eq!(r.path(), "/a?b");
        assert_eq!(r.header("authorization"), Some("Bearer x"));
        assert_eq!(
            r.header_values("cookie").collect::<Vec<_>>(),
            vec!["a=1", "b=2"]
        );
        assert_eq!(r.header("missing"), None);
        let mut bad = wire::encode_map(&[("authorization", "Bearer x")]);
        let n = bad.len();
        bad[n - 2] = 0xff;
        let r = Request::from_wire(bad).unwrap();
        assert_eq!(r.header("authorization"), Some("Bearer \u{fffd}"));
        assert!(Request::from_wire(vec![9, 0, 0, 0]).is_none());
    }

    #[test]
    fn from_wire_keeps_the_hosts_buffer_whatever_the_lengths() {
        // 0xFD and 0x80 in the length table: not UTF-8, and no reason to copy every header.
        let token = format!("Bearer {}", "t".repeat(246));
        let name = "x".repeat(128);
        let encoded = wire::encode_map(&[("authorization", &token), (&name, "v")]);
        let r = Request::from_wire(encoded.clone()).unwrap();
        assert_eq!(r.text.len(), encoded.len(), "the host's buffer, not a copy");
        assert_eq!(r.header("authorization"), Some(token.as_str()));
        assert_eq!(r.header(&name), Some("v"));
    }

    #[test]
    fn query_and_fragment_stripped() {
        assert_eq!(strip_query("/a/b?x=1#f"), "/a/b");
        assert_eq!(strip_query("/a#f?x"), "/a");
        assert_eq!(strip_query("/a"), "/a");
    }

    #[test]
    fn cors_preflight() {
        let pre = [
            (":method", "OPTIONS"),
            ("origin", "https://a"),
            ("access-control-request-method", "GET"),
        ];
        assert!(req(&pre).is_cors_preflight());
        assert!(!req(&pre[..2]).is_cors_preflight());
        assert!(!req(&[(":method", "GET"), pre[1], pre[2]]).is_cors_preflight());
    }
}
