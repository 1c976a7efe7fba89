//! Requests without a valid token: a rate limit per client address (token bucket; 429 once
//! spent) and aggregated audit records — one per address and answer status per window, with
//! the count — so anonymous noise cannot flood the audit log. Authenticated requests are
//! audited one by one elsewhere.

use super::audit::NewRecord;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Rate limit and audit aggregation of anonymous requests.
pub struct AnonymousGate {
    per_minute: f64,
    window: Duration,
    callers: Mutex<HashMap<IpAddr, Caller>>,
}

struct Caller {
    /// Requests the address may still send now.
    allowance: f64,
    refilled: Instant,
    /// Start of the current audit window and the requests counted in it, by status.
    window_start: Instant,
    counts: BTreeMap<u16, u64>,
}

impl AnonymousGate {
    /// `per_minute` anonymous requests per address (burst of the same size); audit records
    /// aggregated over `window`.
    pub fn new(per_minute: u32, window: Duration) -> Self {
        AnonymousGate { per_minute: f64::from(per_minute), window, callers: Mutex::new(HashMap::new()) }
    }

    fn callers(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Caller>> {
        self.callers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The address's entry, created with a full allowance.
    fn caller<'a>(
        &self,
        callers: &'a mut HashMap<IpAddr, Caller>,
        address: IpAddr,
        now: Instant,
    ) -> &'a mut Caller {
        callers.entry(address).or_insert_with(|| Caller {
            allowance: self.per_minute,
            refilled: now,
            window_start: now,
            counts: BTreeMap::new(),
        })
    }

    /// Spends one request of the address's allowance; `false` when none is left (answer 429).
    pub fn admit(&self, address: IpAddr) -> bool {
        let now = Instant::now();
        let mut callers = self.callers();
        let caller = self.caller(&mut callers, address, now);
        let earned = now.duration_since(caller.refilled).as_secs_f64() * self.per_minute / 60.0;
        caller.allowance = (caller.allowance + earned).min(self.per_minute);
        caller.refilled = now;
        if caller.allowance >= 1.0 {
            caller.allowance -= 1.0;
            true
        } else {
            false
        }
    }

    /// Counts an answered anonymous request for the aggregated audit record.
    pub fn note(&self, address: IpAddr, status: u16) {
        let now = Instant::now();
        let mut callers = self.callers();
        let caller = self.caller(&mut callers, address, now);
        if caller.counts.is_empty() {
            caller.window_start = now;
        }
        *caller.counts.entry(status).or_default() += 1;
    }

    /// The audit records of the windows that have ended (of every window when `all`), which
    /// are then forgotten; addresses with nothing to report and a full allowance are dropped.
    pub fn due(&self, all: bool) -> Vec<NewRecord> {
        let now = Instant::now();
        let mut records = Vec::new();
        let mut callers = self.callers();
        for (address, caller) in callers.iter_mut() {
            if caller.counts.is_empty() || !(all || now.duration_since(caller.window_start) >= self.window) {
                continue;
            }
            let seconds = now.duration_since(caller.window_start).as_secs().max(1);
            for (status, count) in std::mem::take(&mut caller.counts) {
                records.push(NewRecord {
                    user: "-".into(),
                    role: "-".into(),
                    action: "anonymous".into(),
                    resource: format!(
                        "{count} request(s) without a valid token from {address} in the last {seconds} s"
                    ),
                    outcome: status.to_string(),
                    ..Default::default()
                });
            }
        }
        let per_minute = self.per_minute;
        callers.retain(|_, caller| {
            let earned = now.duration_since(caller.refilled).as_secs_f64() * per_minute / 60.0;
            !caller.counts.is_empty() || caller.allowance + earned < per_minute
        });
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowance_is_spent_and_windows_are_counted() {
        let gate = AnonymousGate::new(3, Duration::from_millis(50));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!((0..5).map(|_| gate.admit(a)).filter(|ok| *ok).count(), 3);
        assert!(gate.admit(b));
        for status in [401, 401, 429, 200] {
            gate.note(a, status);
        }
        assert!(gate.due(false).is_empty(), "the window is still open");
        std::thread::sleep(Duration::from_millis(60));
        let records = gate.due(false);
        assert_eq!(records.len(), 3, "one per status");
        let unauthorized = records.iter().find(|r| r.outcome == "401").unwrap();
        assert!(unauthorized.resource.starts_with("2 request(s) without a valid token from 192.0.2.1"));
        assert!(gate.due(true).is_empty(), "reported once");
    }
}
