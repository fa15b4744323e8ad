//! A read-only view of the request headers (pseudo-headers included), as the host hands them over.

#[derive(Debug, Clone, Default)]
pub struct Request {
    headers: Vec<(String, String)>,
    connection: Connection,
}

/// What the host knows of the downstream connection (read only when the policy needs it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// A client certificate was presented and verified.
    pub mtls: bool,
    /// The workload port the connection came in on.
    pub port: Option<u32>,
    /// The peer certificate's first URI SAN.
    pub uri_san: Option<String>,
}

impl Request {
    /// Header names are expected lowercase, as Envoy presents them.
    pub fn new(headers: Vec<(String, String)>) -> Self {
        Self {
            headers,
            connection: Connection::default(),
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
        self.headers
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
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
        let path = crate::paths::strip_query(self.path());
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
