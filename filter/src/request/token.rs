//! Where tokens live in a request (headers, query parameters, cookies) and taking them out.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use smallvec::SmallVec;

use super::Request;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationKind {
    /// Lowercase header name and the exact, case-sensitive prefix before the token.
    Header {
        name: String,
        prefix: String,
    },
    Param(String),
    Cookie(String),
}

impl LocationKind {
    /// `Authorization: DPoP <token>` (RFC 9449 §7.1), which rules with `dpop` read.
    pub fn dpop() -> Self {
        Self::Header {
            name: "authorization".into(),
            prefix: "DPoP ".into(),
        }
    }

    pub fn is_dpop(&self) -> bool {
        matches!(self, Self::Header { name, prefix } if name == "authorization" && prefix == "DPoP ")
    }
}

/// A token location and the rules (indices into `Config::rules`) that read it.
#[derive(Debug, Clone)]
pub struct Location {
    pub kind: LocationKind,
    pub rules: Vec<usize>,
}

/// A token found in a request, with the index of the location it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'r> {
    pub token: Cow<'r, str>,
    pub location: usize,
}

/// The tokens of one request: one or two in all but odd requests, kept without allocating.
pub type Tokens<'r> = SmallVec<[Found<'r>; 2]>;

/// Every token present at any location; every value of a repeated header, parameter or cookie
/// counts. Query parameter names and values are percent-decoded, as Envoy's jwt_authn reads them.
/// Empty values are no token.
pub fn extract<'r>(locations: &[Location], req: &'r Request) -> Tokens<'r> {
    let mut found = Tokens::new();
    for (i, loc) in locations.iter().enumerate() {
        let mut push = |t: Cow<'r, str>| {
            let token = match t {
                Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
                Cow::Owned(o) => Cow::Owned(o.trim().to_string()),
            };
            if !token.is_empty() && !found.iter().any(|f| f.location == i && f.token == token) {
                found.push(Found { token, location: i });
            }
        };
        match &loc.kind {
            LocationKind::Header { name, prefix } => {
                for v in req.header_values(name) {
                    if let Some(t) = v.strip_prefix(prefix.as_str()) {
                        push(Cow::Borrowed(t));
                    }
                }
            }
            LocationKind::Param(name) => {
                for (k, v) in query_pairs(req.path()) {
                    if decode(k) == name.as_str() {
                        push(decode(v));
                    }
                }
            }
            LocationKind::Cookie(name) => {
                for header in req.header_values("cookie") {
                    for (k, v) in cookie_pairs(header) {
                        if k == name {
                            push(Cow::Borrowed(v));
                        }
                    }
                }
            }
        }
    }
    found
}

fn decode(text: &str) -> Cow<'_, str> {
    percent_decode_str(text).decode_utf8_lossy()
}

/// `path` without the query parameters named `names` (compared decoded, as tokens are found);
/// the rest of the path and query byte for byte. None when there is none to remove.
pub fn without_params(path: &str, names: &[&str]) -> Option<String> {
    let (before_fragment, fragment) = match path.split_once('#') {
        Some((p, f)) => (p, Some(f)),
        None => (path, None),
    };
    let (base, query) = before_fragment.split_once('?')?;
    let named = |pair: &str| {
        let name = pair.split_once('=').map_or(pair, |(k, _)| k);
        names.iter().any(|n| decode(name) == *n)
    };
    if !query.split('&').any(named) {
        return None;
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !named(p)).collect();
    let mut out = String::with_capacity(path.len());
    out.push_str(base);
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Some(out)
}

fn query_pairs(path: &str) -> impl Iterator<Item = (&str, &str)> {
    let without_fragment = path.split('#').next().unwrap_or(path);
    let query = without_fragment.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

fn cookie_pairs(header: &str) -> impl Iterator<Item = (&str, &str)> {
    header.split(';').filter_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        Some((k.trim(), v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(kind: LocationKind) -> Location {
        Location {
            kind,
            rules: vec![0],
        }
    }

    fn bearer() -> LocationKind {
        LocationKind::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        }
    }

    fn req(path: &str, headers: &[(&str, &str)]) -> Request {
        let mut h = vec![(":path".to_string(), path.to_string())];
        h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Request::new(h)
    }

    fn tokens(locs: &[Location], r: &Request) -> Vec<(String, usize)> {
        extract(locs, r)
            .into_iter()
            .map(|f| (f.token.to_string(), f.location))
            .collect()
    }

    #[test]
    fn header_prefix_is_exact_and_case_sensitive() {
        let locs = [loc(bearer())];
        let cases = [
            ("Bearer abc", vec![("abc".to_string(), 0)]),
            ("bearer abc", vec![]),
            ("BEARER abc", vec![]),
            ("Basic abc", vec![]),
            ("xBearer abc", vec![]),
            ("Bearer ", vec![]),
            ("Bearer  abc ", vec![("abc".to_string(), 0)]),
        ];
        for (value, want) in cases {
            assert_eq!(
                tokens(&locs, &req("/", &[("authorization", value)])),
                want,
                "{value}"
            );
        }
    }

    #[test]
    fn every_value_of_repeated_header() {
        let locs = [loc(bearer())];
        let r = req(
            "/",
            &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
        );
        assert_eq!(
            tokens(&locs, &r),
            vec![("a".to_string(), 0), ("b".to_string(), 0)]
        );
    }

    #[test]
    fn header_without_prefix_takes_whole_value() {
        let locs = [loc(LocationKind::Header {
            name: "x-jwt".into(),
            prefix: String::new(),
        })];
        assert_eq!(
            tokens(&locs, &req("/", &[("x-jwt", "a.b.c")])),
            vec![("a.b.c".to_string(), 0)]
        );
    }

    #[test]
    fn params() {
        let locs = [loc(LocationKind::Param("access_token".into()))];
        let cases = [
            ("/p?access_token=t1", vec!["t1"]),
            ("/p?x=1&access_token=t1&y=2", vec!["t1"]),
            ("/p?access_token=t1&access_token=t2", vec!["t1", "t2"]),
            ("/p?access_token=", vec![]),
            ("/p?xaccess_token=t1", vec![]),
            ("/p?access_token=t1#frag", vec!["t1"]),
            ("/p#?access_token=t1", vec![]),
            ("/p", vec![]),
            ("/p?acc%65ss_token=t%31", vec!["t1"]),
            ("/p?access_token=%zz", vec!["%zz"]),
        ];
        for (path, want) in cases {
            let got: Vec<String> = tokens(&locs, &req(path, &[]))
                .into_iter()
                .map(|t| t.0)
                .collect();
            assert_eq!(got, want, "{path}");
        }
    }

    #[test]
    fn params_removed_the_rest_kept_byte_for_byte() {
        let cases = [
            ("/x?a=1&access_token=T&b=2", Some("/x?a=1&b=2")),
            ("/x?access_token=T", Some("/x")),
            ("/x?access_token=T&access_token=U", Some("/x")),
            ("/x?a=%41+c&access_token=T&b", Some("/x?a=%41+c&b")),
            ("/x?acc%65ss_token=T&z=1", Some("/x?z=1")),
            ("/x?a=1&&access_token=T&", Some("/x?a=1&&")),
            ("/x?access_token&b=%2f", Some("/x?b=%2f")),
            ("/x?a=1&access_token=T#f", Some("/x?a=1#f")),
            ("/x?a=1&token=T", Some("/x?a=1")),
            ("/x?a=1&xaccess_token=T", None),
            ("/x?a=1", None),
            ("/x", None),
            ("/x#?access_token=T", None),
        ];
        for (path, want) in cases {
            assert_eq!(
                without_params(path, &["access_token", "token"]).as_deref(),
                want,
                "{path}"
            );
        }
    }

    #[test]
    fn cookies() {
        let locs = [loc(LocationKind::Cookie("session".into()))];
        let cases = [
            (vec!["session=t1"], vec!["t1"]),
            (vec!["a=1; session=t1; b=2"], vec!["t1"]),
            (vec!["session=\"t1\""], vec!["t1"]),
            (vec!["a=1", "session=t2"], vec!["t2"]),
            (vec!["xsession=t1"], vec![]),
            (vec!["session"], vec![]),
        ];
        for (headers, want) in cases {
            let h: Vec<(&str, &str)> = headers.iter().map(|v| ("cookie", *v)).collect();
            let got: Vec<String> = tokens(&locs, &req("/", &h))
                .into_iter()
                .map(|t| t.0)
                .collect();
            assert_eq!(got, want, "{headers:?}");
        }
    }

    #[test]
    fn several_locations() {
        let locs = [
            loc(bearer()),
            loc(LocationKind::Param("access_token".into())),
        ];
        let r = req("/?access_token=p", &[("authorization", "Bearer h")]);
        assert_eq!(
            tokens(&locs, &r),
            vec![("h".to_string(), 0), ("p".to_string(), 1)]
        );
    }
}
