//! The canonical form of a request path, for matching trigger rules only (what is forwarded is
//! never changed): one spelling for every way a client can write the same path, so that neither
//! an exclusion nor an inclusion can be sidestepped by spelling.
//!
//! - query and fragment removed;
//! - escapes of unreserved characters decoded (RFC 3986 §2.3), escapes that form UTF-8 characters
//!   decoded (RFC 3987 §3.2), other escapes upper-cased, characters a path cannot hold escaped;
//! - `.` and `..` segments resolved, `%2E` spellings included (RFC 3986 §5.2.4);
//! - repeated slashes merged.
//!
//! A path whose meaning depends on who reads it is `ambiguous`: an encoded `/`, `\` or `%`, a
//! backslash, a `;` (path parameters), a control character, an invalid escape or an escape that is
//! not UTF-8, U+FFFD (bytes that were not UTF-8), a path that does not start with `/`, or one where
//! merging slashes before or after resolving dot segments gives different paths
//! (`/public//../admin`).

use std::borrow::Cow;

use super::strip_query;

#[derive(Debug, PartialEq, Eq)]
pub struct Canonical<'a> {
    pub path: Cow<'a, str>,
    pub ambiguous: bool,
}

pub fn canonical(raw: &str) -> Canonical<'_> {
    let path = strip_query(raw);
    if is_canonical(path) {
        return Canonical {
            path: Cow::Borrowed(path),
            ambiguous: false,
        };
    }
    let mut ambiguous = !path.starts_with('/');
    let normal = normalize_encoding(path, &mut ambiguous);
    let merged_first = resolve(&normal, true);
    let dots_first = merge_slashes(&resolve(&normal, false));
    ambiguous |= merged_first != dots_first;
    Canonical {
        path: Cow::Owned(merged_first),
        ambiguous,
    }
}

/// A trigger rule's exact, prefix or suffix string in the same encoding as a canonical path, so
/// that `/café` and `/caf%c3%a9` name the same paths. Dot segments and slashes are left as written.
pub fn normalize_pattern(pattern: &str) -> String {
    normalize_encoding(pattern, &mut false)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// What a canonical path holds as itself; `;` is left out since it makes a path ambiguous.
fn is_plain(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'/' | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

/// Most paths are already canonical: checked without allocating.
fn is_canonical(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.first() == Some(&b'/')
        && bytes.iter().all(|b| is_plain(*b))
        && !path.contains("//")
        && !path
            .split('/')
            .any(|segment| segment == "." || segment == "..")
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn escape_at(bytes: &[u8], at: usize) -> Option<u8> {
    match bytes.get(at..at + 3)? {
        [b'%', hi, lo] => Some(hex_value(*hi)? << 4 | hex_value(*lo)?),
        _ => None,
    }
}

fn push_escaped(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    for nibble in [b >> 4, b & 0x0f] {
        if let Some(c) = HEX.get(usize::from(nibble)) {
            out.push(char::from(*c));
        }
    }
}

/// The bytes of a UTF-8 character spelled as escapes from `at` (its lead byte `lead`), if they
/// are one: its length in bytes and the character.
fn escaped_char(bytes: &[u8], at: usize, lead: u8) -> Option<(usize, char)> {
    let len = match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let mut utf8 = [0u8; 4];
    for (i, slot) in utf8.iter_mut().enumerate().take(len) {
        *slot = escape_at(bytes, at + 3 * i)?;
    }
    let c = std::str::from_utf8(utf8.get(..len)?).ok()?.chars().next()?;
    Some((len, c))
}

fn normalize_encoding(path: &str, ambiguous: &mut bool) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut at = 0;
    while let Some(&b) = bytes.get(at) {
        if b == b'%' {
            let Some(decoded) = escape_at(bytes, at) else {
                // A lone `%`: written as the escape it would have to be.
                *ambiguous = true;
                push_escaped(&mut out, b'%');
                at += 1;
                continue;
            };
            if is_unreserved(decoded) {
                out.push(char::from(decoded));
            } else if decoded >= 0x80 {
                if let Some((len, c)) = escaped_char(bytes, at, decoded) {
                    out.push(c);
                    at += 3 * len;
                    continue;
                }
                *ambiguous = true;
                push_escaped(&mut out, decoded);
            } else {
                *ambiguous |= matches!(decoded, b'/' | b'\\' | b'%') || decoded.is_ascii_control();
                push_escaped(&mut out, decoded);
            }
            at += 3;
            continue;
        }
        let Some(c) = path.get(at..).and_then(|rest| rest.chars().next()) else {
            break;
        };
        if !c.is_ascii() {
            // U+FFFD may stand for bytes that were not UTF-8 on the wire.
            *ambiguous |= c == char::REPLACEMENT_CHARACTER;
            out.push(c);
        } else if is_plain(b) {
            out.push(c);
        } else {
            *ambiguous |= matches!(b, b';' | b'\\') || b.is_ascii_control();
            if b == b';' {
                out.push(';');
            } else {
                push_escaped(&mut out, b);
            }
        }
        at += c.len_utf8();
    }
    out
}

/// Dot segments resolved (RFC 3986 §5.2.4); with `merge_first`, empty segments dropped first.
fn resolve(path: &str, merge_first: bool) -> String {
    let body = path.strip_prefix('/').unwrap_or(path);
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in body.split('/') {
        trailing_slash = true;
        match segment {
            "" if merge_first => {}
            "." => {}
            ".." => {
                kept.pop();
            }
            s => {
                kept.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || kept.is_empty() {
        out.push('/');
    }
    out
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_table() {
        let cases = [
            // Already canonical: borrowed as is.
            ("/ip", "/ip", false),
            ("/", "/", false),
            ("/api/v1/", "/api/v1/", false),
            ("/a.b/c..d/.e", "/a.b/c..d/.e", false),
            ("/ip?x=1#f", "/ip", false),
            ("/x:y@z!$&'()*+,=", "/x:y@z!$&'()*+,=", false),
            // Dot segments and slashes.
            ("/x/../ip", "/ip", false),
            ("/./ip", "/ip", false),
            ("//ip", "/ip", false),
            ("/ip/", "/ip/", false),
            ("/ip//", "/ip/", false),
            ("/ip/.", "/ip/", false),
            ("/ip/..", "/", false),
            ("/../../ip", "/ip", false),
            ("/a/b/../../ip", "/ip", false),
            ("/a/./b/./", "/a/b/", false),
            ("///", "/", false),
            ("/..", "/", false),
            ("/...", "/...", false),
            // Escapes: unreserved decoded, dots included, others upper-cased.
            ("/%69p", "/ip", false),
            ("/%49P", "/IP", false),
            ("/%2e/ip", "/ip", false),
            ("/x/%2E%2e/ip", "/ip", false),
            ("/x/.%2e/ip", "/ip", false),
            ("/a%7eb%5f%2D", "/a~b_-", false),
            ("/a%20b", "/a%20b", false),
            ("/a%3fb", "/a%3Fb", false),
            ("/a%3Ab", "/a%3Ab", false),
            ("/caf%C3%A9", "/café", false),
            ("/caf%c3%a9/%F0%9F%98%80", "/café/😀", false),
            ("/café", "/café", false),
            ("/a b", "/a%20b", false),
            ("/a\"<>^`{|}[]", "/a%22%3C%3E%5E%60%7B%7C%7D%5B%5D", false),
            // Ambiguous: meaning depends on the reader.
            ("/x%2F..%2Fip", "/x%2F..%2Fip", true),
            ("/x%2f../ip", "/x%2F../ip", true),
            ("/x%5c..%5cip", "/x%5C..%5Cip", true),
            ("/x\\..\\ip", "/x%5C..%5Cip", true),
            ("/x/..;/ip", "/x/..;/ip", true),
            ("/ip;jsessionid=1", "/ip;jsessionid=1", true),
            ("/ip%00", "/ip%00", true),
            ("/ip\t", "/ip%09", true),
            ("/ip%7F", "/ip%7F", true),
            ("/ip%", "/ip%25", true),
            ("/ip%4", "/ip%254", true),
            ("/ip%zz", "/ip%25zz", true),
            ("/%2569p", "/%2569p", true),
            ("/%C0%AFip", "/%C0%AFip", true),
            ("/%C3", "/%C3", true),
            ("/%C3%25A9", "/%C3%25A9", true),
            ("/ip\u{FFFD}", "/ip\u{FFFD}", true),
            ("ip", "/ip", true),
            ("*", "/*", true),
            ("/public//../admin", "/admin", true),
            ("/public/%2e%2e//admin", "/admin", false),
        ];
        for (raw, path, ambiguous) in cases {
            let got = canonical(raw);
            assert_eq!(
                (got.path.as_ref(), got.ambiguous),
                (path, ambiguous),
                "canonical({raw:?})"
            );
            let again = canonical(&got.path);
            assert_eq!(again.path, got.path, "idempotent for {raw:?}");
            assert!(got.ambiguous || !again.ambiguous, "stays plain: {raw:?}");
        }
    }

    #[test]
    fn already_canonical_paths_are_borrowed() {
        assert!(matches!(
            canonical("/api/v1/x?q").path,
            Cow::Borrowed("/api/v1/x")
        ));
        assert!(matches!(canonical("/a//b").path, Cow::Owned(_)));
    }

    #[test]
    fn patterns_share_the_encoding() {
        assert_eq!(normalize_pattern("/caf%c3%a9"), "/café");
        assert_eq!(normalize_pattern("/%41pi/"), "/Api/");
        assert_eq!(normalize_pattern("/a%2fb/../"), "/a%2Fb/../");
        assert_eq!(normalize_pattern(".css"), ".css");
    }
}
