//! The latest-frame policy: one slot per camera holding only the newest serialized frame.
//!
//! The subscription sink stores into the slot (replacing an unprocessed frame counts a drop) and
//! returns at once; the worker takes every filled slot together, so frames of cameras that are
//! ready together go through one forward pass, and latency is bounded by one inference however
//! fast images arrive.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One received, not yet processed frame.
#[derive(Debug, Clone)]
pub struct Pending {
    pub data: Vec<u8>,
    pub received_at: Instant,
}

/// Per-camera counters kept with the slots (the sink updates them under the same lock).
#[derive(Debug, Clone, Copy, Default)]
pub struct SlotCounters {
    pub received: u64,
    /// Frames replaced before the worker took them, or discarded while inactive.
    pub dropped: u64,
    pub last_received: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    slots: Vec<Option<Pending>>,
    counters: Vec<SlotCounters>,
    stop: bool,
}

/// The slots of every camera plus the wake-up for the worker.
pub struct Latest {
    inner: Mutex<Inner>,
    ready: Condvar,
}

impl Latest {
    pub fn new(cameras: usize) -> Self {
        Latest {
            inner: Mutex::new(Inner {
                slots: vec![None; cameras],
                counters: vec![SlotCounters::default(); cameras],
                stop: false,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by the sink: keeps only `data` as the camera's next frame.
    pub fn put(&self, camera: usize, data: Vec<u8>) {
        let mut g = self.lock();
        let Inner {
            slots, counters, ..
        } = &mut *g;
        let (Some(slot), Some(c)) = (slots.get_mut(camera), counters.get_mut(camera)) else {
            return;
        };
        let now = Instant::now();
        c.received += 1;
        c.last_received = Some(now);
        if slot
            .replace(Pending {
                data,
                received_at: now,
            })
            .is_some()
        {
            c.dropped += 1;
        }
        drop(g);
        self.ready.notify_all();
    }

    /// Blocks until at least one slot is filled (or `timeout` passes) and takes every filled
    /// slot. `None` once [`Latest::stop`] was called.
    pub fn take_ready(&self, timeout: Duration) -> Option<Vec<(usize, Pending)>> {
        let mut g = self.lock();
        let deadline = Instant::now() + timeout;
        loop {
            if g.stop {
                return None;
            }
            if g.slots.iter().any(Option::is_some) {
                return Some(
                    g.slots
                        .iter_mut()
                        .enumerate()
                        .filter_map(|(i, s)| s.take().map(|p| (i, p)))
                        .collect(),
                );
            }
            let now = Instant::now();
            if now >= deadline {
                return Some(Vec::new());
            }
            g = self
                .ready
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Empties every slot, counting what was there as dropped (on deactivate).
    pub fn clear(&self) {
        let mut g = self.lock();
        let Inner {
            slots, counters, ..
        } = &mut *g;
        for (s, c) in slots.iter_mut().zip(counters.iter_mut()) {
            if s.take().is_some() {
                c.dropped += 1;
            }
        }
    }

    /// Counts frames the worker took but could not process (node not active) as dropped.
    pub fn count_dropped(&self, camera: usize, n: u64) {
        if let Some(c) = self.lock().counters.get_mut(camera) {
            c.dropped += n;
        }
    }

    pub fn counters(&self) -> Vec<SlotCounters> {
        self.lock().counters.clone()
    }

    /// Which cameras have a frame waiting.
    pub fn pending(&self) -> Vec<bool> {
        self.lock().slots.iter().map(Option::is_some).collect()
    }

    pub fn stop(&self) {
        self.lock().stop = true;
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_newest_frame_and_counts_drops() {
        let l = Latest::new(2);
        for i in 0..5u8 {
            l.put(0, vec![i]);
        }
        l.put(1, vec![9]);
        l.put(7, vec![1]); // no such camera: ignored
        let got = l.take_ready(Duration::from_millis(10)).unwrap();
        let data: Vec<(usize, Vec<u8>)> = got.into_iter().map(|(i, p)| (i, p.data)).collect();
        assert_eq!(data, vec![(0, vec![4]), (1, vec![9])]);
        let c = l.counters();
        assert_eq!((c[0].received, c[0].dropped), (5, 4));
        assert_eq!((c[1].received, c[1].dropped), (1, 0));
        assert!(l.take_ready(Duration::from_millis(5)).unwrap().is_empty());
        l.stop();
        assert!(l.take_ready(Duration::from_secs(5)).is_none());
    }
}
