//! Query-string and path parsing the way HubSpot's API accepts them: list
//! parameters repeated (`properties=a&properties=b`) or comma-joined
//! (`properties=a,b`), booleans in any case.

use crate::error::ApiError;

/// The decoded pairs of a query string, in order.
#[derive(Debug, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(raw: &str) -> Self {
        Self(
            url::form_urlencoded::parse(raw.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The last value of `key` (HubSpot's servlet stack keeps one; the last is
    /// as good a choice as any and is documented).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, repeated or comma-joined, trimmed, without empties.
    pub(crate) fn list(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Whether `key` was given at all.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    pub(crate) fn bool(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_bool(v).ok_or_else(|| {
                ApiError::validation(format!("Invalid boolean value for {key}: {v}"))
            }),
        }
    }

    pub(crate) fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| {
                v.trim()
                    .parse()
                    .map_err(|_| ApiError::validation(format!("Invalid number for {key}: {v}")))
            })
            .transpose()
    }
}

/// `true`/`false` in any case.
pub(crate) fn parse_bool(v: &str) -> Option<bool> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Percent-decodes a path segment. Unlike form decoding, `+` stays a plus:
/// `a+b%40x.com` is the email `a+b@x.com`.
pub(crate) fn decode_path_segment(segment: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_accept_repeated_and_comma_joined_values() {
        let q = Query::parse("properties=email,firstname&properties=lastname&properties=&x=1");
        assert_eq!(q.list("properties"), ["email", "firstname", "lastname"]);
        assert!(q.list("missing").is_empty());
    }

    #[test]
    fn booleans_in_any_case() {
        let q = Query::parse("a=TRUE&b=False&c=yes");
        assert!(q.bool("a", false).expect("a"));
        assert!(!q.bool("b", true).expect("b"));
        assert!(q.bool("c", false).is_err());
        assert!(q.bool("d", true).expect("default"));
    }

    #[test]
    fn path_segments_keep_plus_signs() {
        assert_eq!(decode_path_segment("a+b%40x.com"), "a+b@x.com");
        assert_eq!(decode_path_segment("100%25"), "100%");
        assert_eq!(decode_path_segment("bad%4"), "bad%4");
        assert_eq!(decode_path_segment("end%40"), "end@");
    }
}
