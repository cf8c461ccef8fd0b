//! Pairing colour frames with depth frames by header stamp, exactly or within a slop, in the
//! manner of message_filters' ApproximateTime for two streams, as a pure struct (no clock, no
//! threads): the caller pushes frames and polls for pairs.
//!
//! Rules (stamps in ns; each stream's stamps are assumed non-decreasing, as a driver's are):
//! * A colour frame pairs with the depth frame nearest in stamp, if within `slop`. It is decided
//!   as soon as no better depth can still come: an exact match, or any depth at or after the
//!   colour stamp already queued (later depths are only further away).
//! * A colour frame with no depth within `slop` once a depth later than `stamp + slop` arrived
//!   can never pair: dropped and counted. The colour queue is bounded; overflow drops the oldest.
//! * A depth frame is kept while it can still pair: it is discarded only when it is older than
//!   `min(oldest queued colour, newest colour seen) - slop` (no present or future colour can
//!   reach it), or when the depth queue overflows (oldest first). A newer colour stamp alone is
//!   not a reason to discard a depth that an older queued colour can still use.

use std::collections::VecDeque;

/// Counters since construction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PairerStats {
    pub colour_in: u64,
    pub depth_in: u64,
    pub paired: u64,
    /// Colour frames that found no depth within the slop (or overflowed the queue).
    pub colour_unpaired: u64,
    /// Depth frames discarded without a colour frame.
    pub depth_unpaired: u64,
}

/// The pairing state of one camera; `C` and `D` are the payloads.
#[derive(Debug)]
pub struct StampPairer<C, D> {
    slop_ns: i64,
    max_colour: usize,
    max_depth: usize,
    colour: VecDeque<(i64, C)>,
    depth: VecDeque<(i64, D)>,
    newest_colour: Option<i64>,
    stats: PairerStats,
}

/// A colour frame, its depth frame and both stamps.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair<C, D> {
    pub colour_stamp: i64,
    pub depth_stamp: i64,
    pub colour: C,
    pub depth: D,
}

impl<C, D> StampPairer<C, D> {
    /// `slop_ns >= 0`; queue bounds of at least 1 (0 is taken as 1).
    pub fn new(slop_ns: i64, max_colour: usize, max_depth: usize) -> Self {
        Self {
            slop_ns: slop_ns.max(0),
            max_colour: max_colour.max(1),
            max_depth: max_depth.max(1),
            colour: VecDeque::new(),
            depth: VecDeque::new(),
            newest_colour: None,
            stats: PairerStats::default(),
        }
    }

    pub fn stats(&self) -> PairerStats {
        self.stats
    }

    pub fn queued(&self) -> (usize, usize) {
        (self.colour.len(), self.depth.len())
    }

    /// Forgets every queued frame (on deactivate); counters stay.
    pub fn clear(&mut self) {
        self.stats.colour_unpaired += self.colour.len() as u64;
        self.stats.depth_unpaired += self.depth.len() as u64;
        self.colour.clear();
        self.depth.clear();
        self.newest_colour = None;
    }

    pub fn push_depth(&mut self, stamp: i64, d: D) {
        self.stats.depth_in += 1;
        // Keep the queue sorted even if a frame arrives late.
        let at = self.depth.partition_point(|(s, _)| *s <= stamp);
        self.depth.insert(at, (stamp, d));
        while self.depth.len() > self.max_depth {
            self.depth.pop_front();
            self.stats.depth_unpaired += 1;
        }
    }

    pub fn push_colour(&mut self, stamp: i64, c: C) {
        self.stats.colour_in += 1;
        self.newest_colour = Some(self.newest_colour.map_or(stamp, |n| n.max(stamp)));
        let at = self.colour.partition_point(|(s, _)| *s <= stamp);
        self.colour.insert(at, (stamp, c));
        while self.colour.len() > self.max_colour {
            self.colour.pop_front();
            self.stats.colour_unpaired += 1;
        }
    }

    /// Every pair that can be decided now, oldest colour first.
    pub fn poll(&mut self) -> Vec<Pair<C, D>> {
        let mut out = Vec::new();
        while let Some(&(c, _)) = self.colour.front() {
            let nearest = self
                .depth
                .iter()
                .enumerate()
                .min_by_key(|(_, (d, _))| (d - c).unsigned_abs())
                .map(|(i, (d, _))| (i, *d));
            let latest_depth = self.depth.back().map(|(d, _)| *d);
            match nearest {
                Some((i, d))
                    if (d - c).abs() <= self.slop_ns
                        && (d == c || latest_depth.is_some_and(|l| l >= c)) =>
                {
                    let (cs, colour) = self.colour.pop_front().expect("front exists");
                    let (ds, depth) = self.depth.remove(i).expect("index from iter");
                    self.stats.paired += 1;
                    out.push(Pair {
                        colour_stamp: cs,
                        depth_stamp: ds,
                        colour,
                        depth,
                    });
                }
                _ if latest_depth.is_some_and(|l| l > c + self.slop_ns) => {
                    self.colour.pop_front();
                    self.stats.colour_unpaired += 1;
                }
                _ => break,
            }
        }
        self.prune_depth();
        out
    }

    /// The end of both streams (the end of a bag): every queued colour frame takes the nearest
    /// queued depth within the slop, since no closer one can come any more; the rest are counted
    /// unpaired, and so are the depth frames left over.
    pub fn finish(&mut self) -> Vec<Pair<C, D>> {
        let mut out = self.poll();
        while let Some((c, colour)) = self.colour.pop_front() {
            let nearest = self
                .depth
                .iter()
                .enumerate()
                .min_by_key(|(_, (d, _))| (d - c).unsigned_abs())
                .filter(|(_, (d, _))| (d - c).abs() <= self.slop_ns)
                .map(|(i, _)| i);
            match nearest.and_then(|i| self.depth.remove(i)) {
                Some((ds, depth)) => {
                    self.stats.paired += 1;
                    out.push(Pair {
                        colour_stamp: c,
                        depth_stamp: ds,
                        colour,
                        depth,
                    });
                }
                None => self.stats.colour_unpaired += 1,
            }
        }
        self.stats.depth_unpaired += self.depth.len() as u64;
        self.depth.clear();
        out
    }

    fn prune_depth(&mut self) {
        let Some(newest) = self.newest_colour else {
            return;
        };
        let reach = self
            .colour
            .front()
            .map_or(newest, |(c, _)| (*c).min(newest))
            - self.slop_ns;
        while self.depth.front().is_some_and(|(d, _)| *d < reach) {
            self.depth.pop_front();
            self.stats.depth_unpaired += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1_000_000;

    #[test]
    fn exact_match_pairs_at_once() {
        let mut p = StampPairer::new(10 * MS, 4, 4);
        p.push_depth(100 * MS, "d");
        p.push_colour(100 * MS, "c");
        let got = p.poll();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].colour, got[0].depth), ("c", "d"));
    }

    #[test]
    fn waits_for_a_possibly_closer_depth_then_takes_the_nearest() {
        let mut p = StampPairer::new(10 * MS, 4, 8);
        p.push_depth(95 * MS, 1);
        p.push_colour(100 * MS, ());
        // 95 is within slop, but a depth at 101 could still come: undecided.
        assert!(p.poll().is_empty());
        p.push_depth(102 * MS, 2);
        let got = p.poll();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].depth, 2);
        assert_eq!(got[0].depth_stamp, 102 * MS);
        // 95 can still reach a later colour up to 105 ms: kept.
        assert_eq!(p.queued(), (0, 1));
        p.push_colour(120 * MS, ());
        p.push_depth(135 * MS, 3);
        assert!(p.poll().is_empty());
        // 120 found nothing within 10 ms; 95 is older than 120 - 10 and went.
        let s = p.stats();
        assert_eq!((s.paired, s.colour_unpaired, s.depth_unpaired), (1, 1, 1));
    }

    #[test]
    fn a_depth_an_older_queued_colour_can_use_survives_a_newer_colour() {
        let mut p = StampPairer::new(5 * MS, 4, 8);
        p.push_colour(100 * MS, "old");
        p.push_colour(200 * MS, "new");
        // Arrives after the 200 ms colour, but pairs with the 100 ms one.
        p.push_depth(103 * MS, "d1");
        let got = p.poll();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].colour, got[0].depth), ("old", "d1"));
        p.push_depth(198 * MS, "d2");
        assert!(p.poll().is_empty(), "a closer depth may still come");
        p.push_depth(230 * MS, "d3");
        let got = p.poll();
        assert_eq!((got[0].colour, got[0].depth), ("new", "d2"));
        assert_eq!(p.stats().depth_unpaired, 0);
    }

    #[test]
    fn finish_pairs_what_waited_for_a_closer_depth_and_counts_the_rest() {
        let mut p = StampPairer::new(10 * MS, 4, 8);
        p.push_depth(95 * MS, "d95");
        p.push_colour(100 * MS, "c100");
        p.push_colour(300 * MS, "c300");
        // 95 is within the slop of 100, but a closer depth could still come: undecided.
        assert!(p.poll().is_empty());
        let got = p.finish();
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].colour, got[0].depth), ("c100", "d95"));
        let s = p.stats();
        assert_eq!((s.paired, s.colour_unpaired, s.depth_unpaired), (1, 1, 0));
        assert_eq!(p.queued(), (0, 0));
        let mut p = StampPairer::<(), ()>::new(MS, 4, 8);
        p.push_depth(0, ());
        p.push_depth(500 * MS, ());
        assert!(p.finish().is_empty());
        assert_eq!(p.stats().depth_unpaired, 2);
    }

    #[test]
    fn queues_are_bounded_and_overflow_is_counted() {
        let mut p = StampPairer::<u32, u32>::new(MS, 2, 3);
        for i in 0..5 {
            p.push_depth(i * 10 * MS, 0);
            p.push_colour(1000 * MS + i * MS, 0);
        }
        assert_eq!(p.queued(), (2, 3));
        let s = p.stats();
        assert_eq!((s.colour_unpaired, s.depth_unpaired), (3, 2));
    }
}
