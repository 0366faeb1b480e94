//! Response deadlines for one worker thread, with one timer between them.
//!
//! A `tokio::time::timeout` per request puts an entry in the runtime's timer wheel when the
//! request starts waiting and takes it out when the answer comes (a lock and the wheel's
//! bookkeeping each time), almost always for nothing. Here a request that has to wait records
//! its deadline in the worker's list (a slot reused from a free list) and removes it when done.
//! One timer, armed for the earliest deadline in the list, wakes the requests whose deadline has
//! passed and re-arms itself for the next. Deadlines mostly come in increasing order (a few
//! response timeouts), so the timer is re-armed about once per timeout, not once per request.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use tokio::sync::Notify;
use tokio::time::Instant;

struct Entry {
    deadline: Instant,
    waker: Waker,
    expired: bool,
}

#[derive(Default)]
struct Inner {
    entries: Vec<Option<Entry>>,
    free: Vec<usize>,
    /// When the timer will fire; `None`: not armed.
    armed: Option<Instant>,
}

/// One worker thread's deadlines. Only that thread uses them, so the mutex is never contended
/// (it makes them `Send`, for `tokio::spawn` on the worker's current-thread runtime).
#[derive(Clone, Default)]
pub(crate) struct Deadlines {
    inner: Arc<Mutex<Inner>>,
    /// Tells the timer task about an earlier deadline than the one it sleeps to.
    rearm: Arc<Notify>,
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|p| p.into_inner())
}

impl Deadlines {
    /// The timer task: spawn it once on the worker's runtime; it ends with the runtime.
    pub(crate) fn timer(&self) -> impl Future<Output = ()> + 'static {
        let inner = self.inner.clone();
        let rearm = self.rearm.clone();
        async move {
            loop {
                let armed = lock(&inner).armed;
                match armed {
                    None => rearm.notified().await,
                    Some(at) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at) => fire(&inner),
                            _ = rearm.notified() => {}
                        }
                    }
                }
            }
        }
    }

    /// `fut`'s output, or `None` when `deadline` passes first.
    pub(crate) async fn within<F: Future>(&self, deadline: Instant, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        let mut slot = Slot { d: self, key: None };
        std::future::poll_fn(|cx| {
            if slot.expired() {
                return Poll::Ready(None);
            }
            if let Poll::Ready(v) = fut.as_mut().poll(cx) {
                return Poll::Ready(Some(v));
            }
            slot.wait(deadline, cx.waker());
            Poll::Pending
        })
        .await
    }
}

/// Wakes the requests whose deadline has passed; arms the timer for the earliest of the rest.
fn fire(inner: &Mutex<Inner>) {
    let now = Instant::now();
    let mut inner = lock(inner);
    let mut next: Option<Instant> = None;
    for e in inner.entries.iter_mut().flatten() {
        if e.expired {
            continue;
        }
        if e.deadline <= now {
            e.expired = true;
            e.waker.wake_by_ref();
        } else {
            next = Some(next.map_or(e.deadline, |n| n.min(e.deadline)));
        }
    }
    inner.armed = next;
}

/// A request's place in the list, removed when the request is done (or dropped).
struct Slot<'a> {
    d: &'a Deadlines,
    key: Option<usize>,
}

impl Slot<'_> {
    fn expired(&self) -> bool {
        self.key
            .is_some_and(|k| lock(&self.d.inner).entries.get(k).is_some_and(|e| e.as_ref().is_some_and(|e| e.expired)))
    }

    fn wait(&mut self, deadline: Instant, waker: &Waker) {
        let mut inner = lock(&self.d.inner);
        if let Some(k) = self.key {
            if let Some(Some(e)) = inner.entries.get_mut(k)
                && !e.waker.will_wake(waker)
            {
                e.waker = waker.clone();
            }
            return;
        }
        let entry = Some(Entry { deadline, waker: waker.clone(), expired: false });
        let k = match inner.free.pop() {
            Some(k) => {
                inner.entries[k] = entry;
                k
            }
            None => {
                inner.entries.push(entry);
                inner.entries.len() - 1
            }
        };
        self.key = Some(k);
        if inner.armed.is_none_or(|at| deadline < at) {
            inner.armed = Some(deadline);
            self.d.rearm.notify_one();
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            let mut inner = lock(&self.d.inner);
            inner.entries[k] = None;
            inner.free.push(k);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn answers_before_the_deadline_pass_and_late_ones_expire() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let d = Deadlines::default();
            tokio::spawn(d.timer());
            let now = Instant::now();
            let quick = d.within(now + Duration::from_secs(5), tokio::time::sleep(Duration::from_millis(1)));
            assert_eq!(quick.await, Some(()));
            // A later deadline, then an earlier one that must re-arm the timer.
            let late = d.within(now + Duration::from_millis(300), tokio::time::sleep(Duration::from_secs(60)));
            let early = d.within(now + Duration::from_millis(50), tokio::time::sleep(Duration::from_secs(60)));
            let (late, early) = tokio::join!(late, early);
            assert_eq!((late, early), (None, None));
            assert!(Instant::now() >= now + Duration::from_millis(300));
            // Slots are reused: the list does not grow with requests.
            for _ in 0..100 {
                let r = d.within(Instant::now() + Duration::from_secs(5), tokio::task::yield_now());
                assert_eq!(r.await, Some(()));
            }
            assert!(lock(&d.inner).entries.len() <= 2);
        });
    }
}
