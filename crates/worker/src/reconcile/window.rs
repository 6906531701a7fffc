//! Time windows over `lastmodifieddate`, at the millisecond resolution of
//! HubSpot's search filters.

use chrono::{DateTime, SecondsFormat, Utc};

/// Modification times `from_ms <= t < to_ms` (epoch milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start.
    pub from_ms: i64,
    /// Exclusive end.
    pub to_ms: i64,
}

impl Window {
    /// The window between two instants, truncated to milliseconds.
    pub fn new(from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        Self {
            from_ms: from.timestamp_millis(),
            to_ms: to.timestamp_millis(),
        }
    }

    /// Whether it holds no instant.
    pub fn is_empty(self) -> bool {
        self.to_ms <= self.from_ms
    }

    /// Its start as an instant.
    pub fn from(self) -> DateTime<Utc> {
        instant(self.from_ms)
    }

    /// Its end as an instant.
    pub fn to(self) -> DateTime<Utc> {
        instant(self.to_ms)
    }

    /// `parts` adjacent windows of (nearly) equal width covering this one,
    /// earliest first; fewer when it is narrower than `parts` milliseconds.
    /// `None` when it cannot be split at all (one millisecond or less).
    pub fn split(self, parts: u64) -> Option<Vec<Self>> {
        let width = i128::from(self.to_ms) - i128::from(self.from_ms);
        if width < 2 || parts < 2 {
            return None;
        }
        let n = i128::from(parts).min(width);
        let bound = |i: i128| {
            // Between from_ms and to_ms, so it fits an i64.
            i64::try_from(i128::from(self.from_ms) + width * i / n).unwrap_or(self.to_ms)
        };
        Some(
            (0..n)
                .map(|i| Self {
                    from_ms: bound(i),
                    to_ms: bound(i + 1),
                })
                .collect(),
        )
    }
}

/// An epoch millisecond as an instant (out-of-range values clamp to the epoch).
pub fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The text a cursor stores: RFC 3339 with milliseconds.
pub fn format_cursor(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads a cursor written by [`format_cursor`].
pub fn parse_cursor(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(from_ms: i64, to_ms: i64) -> Window {
        Window { from_ms, to_ms }
    }

    #[test]
    fn a_split_covers_the_window_with_adjacent_parts() {
        for (window, parts) in [(w(0, 10), 3), (w(5, 1_000_005), 4), (w(-7, 93), 7)] {
            let split = window.split(parts).expect("splits");
            assert_eq!(split.len() as u64, parts);
            assert_eq!(split.first().map(|p| p.from_ms), Some(window.from_ms));
            assert_eq!(split.last().map(|p| p.to_ms), Some(window.to_ms));
            for pair in split.windows(2) {
                assert_eq!(pair[0].to_ms, pair[1].from_ms, "{split:?}");
            }
            assert!(split.iter().all(|p| !p.is_empty()), "{split:?}");
        }
    }

    #[test]
    fn a_narrow_window_splits_into_milliseconds_and_one_millisecond_not_at_all() {
        assert_eq!(
            w(10, 13).split(10),
            Some(vec![w(10, 11), w(11, 12), w(12, 13)])
        );
        assert_eq!(w(10, 11).split(2), None);
        assert_eq!(w(10, 20).split(1), None);
    }

    #[test]
    fn extreme_windows_do_not_overflow() {
        let split = w(i64::MIN, i64::MAX).split(3).expect("splits");
        assert_eq!(split.first().map(|p| p.from_ms), Some(i64::MIN));
        assert_eq!(split.last().map(|p| p.to_ms), Some(i64::MAX));
    }

    #[test]
    fn cursors_round_trip_at_millisecond_precision() {
        let at = instant(1_764_000_000_123);
        let text = format_cursor(at);
        assert_eq!(text, "2025-11-24T16:00:00.123Z");
        assert_eq!(parse_cursor(&text), Some(at));
        assert_eq!(parse_cursor("after=200"), None);
    }
}
