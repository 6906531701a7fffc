//! HubSpot's API limits for one portal: a rolling burst window, a daily quota,
//! and search's own per-token limit (docs/hubspot-sim.md, "Rate limits").
//!
//! A request answered 429 consumes nothing: HubSpot does not document whether
//! refused calls count, and counting them would lock a client that keeps
//! retrying out for ever; this way a client that backs off one window recovers.
//! Refused calls still count in the observed-load statistic, which measures what
//! a client *sent*.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::RateLimitConfig;

/// The window of the "max calls in any rolling 10 s" statistic.
const OBSERVED_WINDOW: Duration = Duration::from_secs(10);
const SEARCH_WINDOW: Duration = Duration::from_secs(1);

/// The `X-HubSpot-RateLimit-*` values of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateHeaders {
    pub(crate) max: u32,
    pub(crate) remaining: u32,
    pub(crate) interval_ms: u64,
    /// (limit, remaining) — sent for private-app tokens only.
    pub(crate) daily: Option<(u64, u64)>,
}

/// Which limit refused a request (`policyName`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    TenSecondly,
    Daily,
    SearchSecondly,
}

/// The limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow(Option<RateHeaders>),
    Deny(Policy, Option<RateHeaders>),
}

/// The limits and counters of one portal.
#[derive(Debug)]
pub(crate) struct Limiter {
    pub(crate) cfg: RateLimitConfig,
    accepted: VecDeque<Instant>,
    observed: VecDeque<Instant>,
    pub(crate) max_observed: u64,
    day: i64,
    pub(crate) daily_used: u64,
    search: HashMap<String, VecDeque<Instant>>,
}

fn prune(q: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
        q.pop_front();
    }
}

impl Limiter {
    pub(crate) fn new(cfg: RateLimitConfig) -> Self {
        Self {
            cfg,
            accepted: VecDeque::new(),
            observed: VecDeque::new(),
            max_observed: 0,
            day: 0,
            daily_used: 0,
            search: HashMap::new(),
        }
    }

    fn roll_day(&mut self, day: i64) {
        // HubSpot resets at midnight in the account's time zone; we use UTC.
        if day != self.day {
            self.day = day;
            self.daily_used = 0;
        }
    }

    fn observe(&mut self, now: Instant) {
        prune(&mut self.observed, now, OBSERVED_WINDOW);
        self.observed.push_back(now);
        self.max_observed = self.max_observed.max(self.observed.len() as u64);
    }

    fn headers(&self, private_app: bool) -> RateHeaders {
        let used = u32::try_from(self.accepted.len()).unwrap_or(u32::MAX);
        RateHeaders {
            max: self.cfg.window_max,
            remaining: self.cfg.window_max.saturating_sub(used),
            interval_ms: self.cfg.window_ms,
            daily: private_app.then(|| {
                (
                    self.cfg.daily_max,
                    self.cfg.daily_max.saturating_sub(self.daily_used),
                )
            }),
        }
    }

    /// A call subject to the burst window (every API call but search).
    pub(crate) fn check(&mut self, now: Instant, day: i64, private_app: bool) -> Verdict {
        self.observe(now);
        if !self.cfg.enabled {
            return Verdict::Allow(None);
        }
        self.roll_day(day);
        prune(&mut self.accepted, now, self.cfg.window());
        if self.daily_used >= self.cfg.daily_max {
            return Verdict::Deny(Policy::Daily, Some(self.headers(private_app)));
        }
        if self.accepted.len() >= self.cfg.window_max as usize {
            return Verdict::Deny(Policy::TenSecondly, Some(self.headers(private_app)));
        }
        self.accepted.push_back(now);
        self.daily_used += 1;
        Verdict::Allow(Some(self.headers(private_app)))
    }

    /// A search call: its own per-token limit and no headers (search docs).
    pub(crate) fn check_search(&mut self, token: &str, now: Instant, day: i64) -> Verdict {
        if !self.cfg.enabled {
            return Verdict::Allow(None);
        }
        self.roll_day(day);
        if self.daily_used >= self.cfg.daily_max {
            return Verdict::Deny(Policy::Daily, None);
        }
        let q = self.search.entry(token.to_owned()).or_default();
        prune(q, now, SEARCH_WINDOW);
        if q.len() >= self.cfg.search_per_second as usize {
            return Verdict::Deny(Policy::SearchSecondly, None);
        }
        q.push_back(now);
        self.daily_used += 1;
        Verdict::Allow(None)
    }

    /// New limits; counts so far are kept.
    pub(crate) fn set(&mut self, cfg: RateLimitConfig) {
        self.cfg = cfg;
    }

    /// Forgets all counts (statistics reset).
    pub(crate) fn reset_counts(&mut self) {
        self.accepted.clear();
        self.observed.clear();
        self.max_observed = 0;
        self.daily_used = 0;
        self.search.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max: u32, window_ms: u64, daily: u64) -> RateLimitConfig {
        RateLimitConfig {
            enabled: true,
            window_max: max,
            window_ms,
            daily_max: daily,
            search_per_second: 2,
        }
    }

    #[test]
    fn serves_exactly_the_quota_in_a_rolling_window() {
        let mut l = Limiter::new(cfg(3, 1_000, 100));
        let t0 = Instant::now();
        for remaining in [2, 1, 0] {
            match l.check(t0, 1, false) {
                Verdict::Allow(Some(h)) => assert_eq!(h.remaining, remaining),
                other => panic!("expected allow, got {other:?}"),
            }
        }
        assert!(matches!(
            l.check(t0 + Duration::from_millis(999), 1, false),
            Verdict::Deny(Policy::TenSecondly, _)
        ));
        // The refused call consumed nothing: the window frees up on time.
        assert!(matches!(
            l.check(t0 + Duration::from_millis(1_000), 1, false),
            Verdict::Allow(_)
        ));
        assert_eq!(l.max_observed, 5);
        assert_eq!(l.daily_used, 4);
    }

    #[test]
    fn daily_quota_and_headers_for_private_apps() {
        let mut l = Limiter::new(cfg(10, 1_000, 2));
        let t0 = Instant::now();
        let Verdict::Allow(Some(h)) = l.check(t0, 1, true) else {
            panic!("allowed")
        };
        assert_eq!(h.daily, Some((2, 1)));
        assert!(matches!(l.check(t0, 1, true), Verdict::Allow(_)));
        assert!(matches!(
            l.check(t0, 1, true),
            Verdict::Deny(Policy::Daily, _)
        ));
        assert!(
            matches!(l.check(t0, 2, true), Verdict::Allow(_)),
            "a new day resets the quota"
        );
    }

    #[test]
    fn search_has_its_own_per_token_limit() {
        let mut l = Limiter::new(cfg(10, 10_000, 100));
        let t0 = Instant::now();
        assert_eq!(l.check_search("a", t0, 1), Verdict::Allow(None));
        assert_eq!(l.check_search("a", t0, 1), Verdict::Allow(None));
        assert_eq!(
            l.check_search("a", t0, 1),
            Verdict::Deny(Policy::SearchSecondly, None)
        );
        assert_eq!(l.check_search("b", t0, 1), Verdict::Allow(None));
        assert_eq!(
            l.check_search("a", t0 + Duration::from_secs(1), 1),
            Verdict::Allow(None)
        );
    }
}
