//! Rate limits and the search concurrency limit.
//!
//! Anonymous routes (registration, activation) are limited per client address, as resolved
//! through the trusted proxies; searches and uploads per caller, so that a whole town hall
//! behind one address is not throttled as one client. A request past its limit is a 429 with
//! `Retry-After`. Limits are GCRA (`governor`): a burst of a minute's worth, then the rate.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use super::error::ApiError;
use crate::config::Config;

/// Checks between two sweeps of keys not seen for a while.
const SWEEP_EVERY: u64 = 4096;

/// What a request is counted as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Registration and activation, per client address.
    Anonymous,
    /// A search, per caller.
    Search,
    /// An upload, per caller.
    Upload,
}

/// The server's limits.
pub struct Limits {
    anonymous: Option<DefaultKeyedRateLimiter<String>>,
    search: Option<DefaultKeyedRateLimiter<String>>,
    upload: Option<DefaultKeyedRateLimiter<String>>,
    checks: AtomicU64,
    clock: DefaultClock,
    /// Searches running at once (`None`: no limit).
    pub searches: Option<Semaphore>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field(
                "searches_available",
                &self.searches.as_ref().map(Semaphore::available_permits),
            )
            .finish_non_exhaustive()
    }
}

fn per_minute(n: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    NonZeroU32::new(n).map(|n| RateLimiter::keyed(Quota::per_minute(n)))
}

impl Limits {
    /// The limits `config` sets; a rate or a concurrency of 0 means no limit.
    pub fn new(config: &Config) -> Self {
        Self {
            anonymous: per_minute(config.rate_anonymous),
            search: per_minute(config.rate_search),
            upload: per_minute(config.rate_upload),
            checks: AtomicU64::new(0),
            clock: DefaultClock::default(),
            searches: (config.search_concurrency > 0)
                .then(|| Semaphore::new(config.search_concurrency)),
        }
    }

    /// Counts a request of `kind` by `key` (a client address or a user id); a 429 with the
    /// seconds to wait when it is over its limit.
    pub fn check(&self, kind: Kind, key: &str) -> Result<(), ApiError> {
        let limiter = match kind {
            Kind::Anonymous => &self.anonymous,
            Kind::Search => &self.search,
            Kind::Upload => &self.upload,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            for l in [&self.anonymous, &self.search, &self.upload]
                .into_iter()
                .flatten()
            {
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::TooManyRequests {
                message: match kind {
                    Kind::Anonymous => "too many requests from this address; try again later",
                    Kind::Search => "too many searches; try again in a moment",
                    Kind::Upload => "too many uploads; try again in a moment",
                }
                .to_owned(),
                retry_after: wait.as_secs() + 1,
            }
        })
    }
}
