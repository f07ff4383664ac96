//! Login throttling: after a few wrong passwords, a client waits before its next try, and so
//! does the login itself, whoever tries it.
//!
//! Two records count failures: one per client address (an IPv6 address by its /64, which one
//! host usually holds whole) and one for the console's login, which has no user names: every
//! guess is a guess at its passwords, so guesses spread over many addresses still slow down.
//! Each record allows [`FREE_FAILURES`], then makes its key wait a delay doubling from
//! [`FIRST_DELAY`] to at most [`MAX_DELAY`]: bounded, so an attacker can slow the admin down but
//! never lock them out for longer than that. A right password clears both records; a record
//! without a failure for [`FORGET_AFTER`] starts again from nothing. While a key waits, its
//! tries (the right password too) are answered 429 without being checked.
//!
//! `governor` (and `tower_governor` around it) was not used: it limits the rate of all requests
//! by a key known before the handler runs, while this counts only failures and must let a
//! success reset them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong passwords a key may give before it must wait.
pub(crate) const FREE_FAILURES: u32 = 5;
/// The wait after the last free failure; each further failure doubles it.
pub(crate) const FIRST_DELAY: Duration = Duration::from_secs(1);
/// The longest wait.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(5 * 60);
/// A record with no failure for this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Addresses remembered at once, so a client with many addresses cannot grow the table
/// without bound; past it, forgotten records go first, then the oldest.
const MAX_ADDRESSES: usize = 10_000;

#[derive(Debug, Clone, Copy, Default)]
struct Record {
    failures: u32,
    last_failure: Option<Instant>,
    blocked_until: Option<Instant>,
}

impl Record {
    fn wait(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    fn forgotten(&self, now: Instant) -> bool {
        self.last_failure
            .is_none_or(|last| now.duration_since(last) >= FORGET_AFTER)
    }

    fn fail(&mut self, now: Instant) {
        if self.forgotten(now) {
            *self = Record::default();
        }
        self.failures = self.failures.saturating_add(1);
        self.last_failure = Some(now);
        if self.failures >= FREE_FAILURES {
            self.blocked_until = Some(now + delay(self.failures - FREE_FAILURES));
        }
    }
}

/// The wait after `extra` failures beyond the free ones.
fn delay(extra: u32) -> Duration {
    FIRST_DELAY
        .checked_mul(2u32.saturating_pow(extra))
        .map_or(MAX_DELAY, |delay| delay.min(MAX_DELAY))
}

/// The key an address is counted under.
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

#[derive(Debug, Default)]
struct Records {
    addresses: HashMap<IpAddr, Record>,
    login: Record,
}

/// Failed logins, by client address and for the login as a whole.
#[derive(Debug, Default)]
pub(crate) struct LoginThrottle {
    records: Mutex<Records>,
}

impl LoginThrottle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How long a try from `address` must still wait, if it must (the longer of the two waits).
    /// A request whose address is unknown (the app called without `serve`) is held to the
    /// login's record only.
    pub(crate) fn wait(&self, address: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let records = self.lock();
        let by_address = address
            .and_then(|address| records.addresses.get(&address_key(address)))
            .and_then(|record| record.wait(now));
        by_address.max(records.login.wait(now))
    }

    /// Counts a wrong password.
    pub(crate) fn failed(&self, address: Option<IpAddr>, now: Instant) {
        let mut records = self.lock();
        records.login.fail(now);
        let Some(address) = address else {
            return;
        };
        let key = address_key(address);
        if !records.addresses.contains_key(&key) && records.addresses.len() >= MAX_ADDRESSES {
            records
                .addresses
                .retain(|_, record| !record.forgotten(now) || record.wait(now).is_some());
            if records.addresses.len() >= MAX_ADDRESSES {
                let oldest = records
                    .addresses
                    .iter()
                    .min_by_key(|(_, record)| record.last_failure)
                    .map(|(key, _)| *key);
                if let Some(oldest) = oldest {
                    records.addresses.remove(&oldest);
                }
            }
        }
        records.addresses.entry(key).or_default().fail(now);
    }

    /// A right password: the address and the login start again from nothing.
    pub(crate) fn succeeded(&self, address: Option<IpAddr>) {
        let mut records = self.lock();
        records.login = Record::default();
        if let Some(address) = address {
            records.addresses.remove(&address_key(address));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(wait: Option<Duration>) -> Option<u64> {
        wait.map(|wait| wait.as_secs())
    }

    #[test]
    fn five_failures_are_free_then_the_wait_doubles_up_to_five_minutes() {
        let throttle = LoginThrottle::default();
        let address: IpAddr = "192.0.2.1".parse().unwrap();
        let start = Instant::now();
        let mut waits = Vec::new();
        let mut now = start;
        for _ in 0..15 {
            throttle.failed(Some(address), now);
            waits.push(seconds(throttle.wait(Some(address), now)));
            // Try again the moment the wait is over.
            now += throttle.wait(Some(address), now).unwrap_or_default();
        }
        let expected = [None, None, None, None]
            .into_iter()
            .chain([1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300].map(Some))
            .collect::<Vec<_>>();
        assert_eq!(waits, expected);
        throttle.succeeded(Some(address));
        assert_eq!(throttle.wait(Some(address), now), None);
        throttle.failed(Some(address), now);
        assert_eq!(throttle.wait(Some(address), now), None, "a success resets");
    }

    #[test]
    fn the_login_waits_for_failures_from_many_addresses_and_a_success_frees_only_it() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for host in 1..=5 {
            let address: IpAddr = format!("192.0.2.{host}").parse().unwrap();
            assert_eq!(throttle.wait(Some(address), now), None);
            throttle.failed(Some(address), now);
        }
        let fresh: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(seconds(throttle.wait(Some(fresh), now)), Some(1));
        assert_eq!(seconds(throttle.wait(None, now)), Some(1));
        throttle.succeeded(Some(fresh));
        assert_eq!(throttle.wait(Some(fresh), now), None);
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_prefix() {
        assert_eq!(
            address_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap()),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            address_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn failures_are_forgotten_after_a_quiet_while() {
        let throttle = LoginThrottle::default();
        let address: IpAddr = "192.0.2.1".parse().unwrap();
        let start = Instant::now();
        for _ in 0..4 {
            throttle.failed(Some(address), start);
        }
        let later = start + FORGET_AFTER;
        throttle.failed(Some(address), later);
        assert_eq!(throttle.wait(Some(address), later), None);
    }
}
