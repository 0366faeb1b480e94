//! A token bucket per calling service (per replica). Refusals become 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate_per_sec: u32, burst: u32) -> Self {
        Self { rate: rate_per_sec as f64, burst: burst as f64, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes `cost` tokens for `caller`; on refusal, the whole seconds until enough are back.
    pub fn take(&self, caller: &str, cost: u32) -> Result<(), u64> {
        let cost = (cost as f64).min(self.burst);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at) = buckets.entry(caller.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= cost {
            *tokens -= cost;
            Ok(())
        } else {
            Err(((cost - *tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_over_its_burst_is_refused_and_others_are_not() {
        let l = RateLimiter::new(1, 3);
        for _ in 0..3 {
            assert!(l.take("auth", 1).is_ok());
        }
        assert_eq!(l.take("auth", 1), Err(1));
        assert!(l.take("rbac", 1).is_ok());
    }
}
