//! A cap on each client's concurrent requests (issue 16, item 2): one client (one address, or
//! one IPv6 /64) cannot hold more than `forwarding.max_in_flight_per_client` requests at once,
//! however slowly it sends or reads. A request holds its client's slot from the arrival of its
//! head to the end of its response body; the excess is answered 429 at once.
//!
//! The counts are shared by the worker threads, in a few independently locked shards (a lock is
//! held for one hash-map update, never across an await).

use prometheus::IntGauge;
use queue_platform::net::limit_ip;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 16;

/// Requests in flight per client key.
pub(crate) struct ClientSlots {
    shards: [Mutex<HashMap<IpAddr, u32>>; SHARDS],
    max: u32,
    /// Every client's requests in flight (`queue_proxy_client_requests_in_flight`).
    gauge: IntGauge,
}

/// One request's place in its client's count; given back when dropped.
pub(crate) struct ClientSlot {
    slots: Arc<ClientSlots>,
    key: IpAddr,
}

fn shard_of(key: &IpAddr) -> usize {
    let folded = match key {
        IpAddr::V4(v4) => u64::from(u32::from(*v4)),
        IpAddr::V6(v6) => (u128::from(*v6) >> 64) as u64,
    };
    // Fibonacci hashing: neighbouring addresses land in different shards.
    (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60) as usize % SHARDS
}

impl ClientSlots {
    pub(crate) fn new(max: u32, gauge: IntGauge) -> Arc<Self> {
        Arc::new(Self { shards: std::array::from_fn(|_| Mutex::new(HashMap::new())), max, gauge })
    }

    /// A slot for `client`, or `None` when it has `max` requests in flight already.
    pub(crate) fn try_take(self: &Arc<Self>, client: IpAddr) -> Option<ClientSlot> {
        let key = limit_ip(client);
        {
            let mut shard = lock(&self.shards[shard_of(&key)]);
            let n = shard.entry(key).or_insert(0);
            if *n >= self.max {
                return None;
            }
            *n += 1;
        }
        self.gauge.inc();
        Some(ClientSlot { slots: self.clone(), key })
    }

    /// The most requests one client may have in flight.
    pub(crate) fn max(&self) -> u32 {
        self.max
    }

    /// The requests `client` has in flight (tests).
    #[cfg(test)]
    fn count(&self, client: IpAddr) -> u32 {
        let key = limit_ip(client);
        lock(&self.shards[shard_of(&key)]).get(&key).copied().unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut shard = lock(&self.slots.shards[shard_of(&self.key)]);
        if let Some(n) = shard.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                shard.remove(&self.key);
            }
        }
        drop(shard);
        self.slots.gauge.dec();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_client_gets_at_most_max_slots_and_gets_them_back() {
        let slots = ClientSlots::new(2, IntGauge::new("g", "g").unwrap());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let one = slots.try_take(a).unwrap();
        let two = slots.try_take(a).unwrap();
        assert!(slots.try_take(a).is_none(), "a third is refused");
        assert!(slots.try_take(b).is_some(), "another client is not affected");
        drop(one);
        let three = slots.try_take(a).unwrap();
        drop((two, three));
        assert_eq!(slots.count(a), 0);
        assert!(lock(&slots.shards[shard_of(&a)]).is_empty(), "no entry is left behind");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let slots = ClientSlots::new(1, IntGauge::new("g", "g").unwrap());
        let _held = slots.try_take("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(slots.try_take("2001:db8:1:2:ffff::9".parse().unwrap()).is_none(), "same /64");
        assert!(slots.try_take("2001:db8:1:3::1".parse().unwrap()).is_some(), "another /64");
        assert_eq!(limit_ip("::ffff:10.1.2.3".parse().unwrap()), "10.1.2.3".parse::<IpAddr>().unwrap());
    }
}
