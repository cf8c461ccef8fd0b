//! Multi-threaded batch loading: worker threads make samples, the caller's thread assembles them
//! into [`Batch`]es in order.
//!
//! * Epochs follow the reference's rule: `len / batch` batches, the last partial batch dropped
//!   (its `DataLoader` with `drop_last=True`).
//! * Each epoch visits the set in a permutation drawn from (seed, epoch) alone, and each sample's
//!   augmentation is keyed by (seed, epoch, index) ([`TrainSet::sample`]), so the batches depend
//!   only on (seed, epoch, position): a run resumed at `start = (epoch, position)` yields exactly
//!   the batches the uninterrupted run yields from there, whatever the worker count.
//! * Threads: a feeder queues sample jobs in order into a bounded channel; `workers` threads take
//!   them and send results back through another bounded channel; the iterator reorders by job
//!   number. Memory is bounded by the two channel capacities (`prefetch` batches each).
//! * A failed sample (unreadable image, corrupt annotation, a panic in a worker) makes that
//!   batch an `Err`; later batches continue. Dropping the loader stops and joins every thread.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use candle_core::Device;
use rand::seq::SliceRandom;

use super::augment::{sample_rng, stream};
use super::dataset::TrainSet;
use super::sample::{Batch, Sample};
use crate::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderOptions {
    pub batch: usize,
    /// Worker threads (at least 1).
    pub workers: usize,
    pub seed: u64,
    /// `SSDAugmentation` when true, the deterministic train transform when false.
    pub augment: bool,
    /// (epoch, batch position within the epoch) of the first batch.
    pub start: (u64, usize),
}

/// The epoch's visiting order: a permutation of 0..len from (seed, epoch).
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut sample_rng(seed, epoch, 0, stream::ORDER));
    order
}

struct Job {
    seq: u64,
    index: usize,
    epoch: u64,
}

type Done = (u64, Result<Sample>);

/// Iterates `Result<Batch>` without end, epoch after epoch; see the module docs.
pub struct Loader {
    opts: LoaderOptions,
    device: Device,
    epoch_size: usize,
    /// (epoch, position) of the next batch.
    next: (u64, usize),
    next_seq: u64,
    pending: BTreeMap<u64, Result<Sample>>,
    results: Option<Receiver<Done>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Loader {
    pub fn new(set: Arc<TrainSet>, opts: LoaderOptions, device: Device) -> Result<Self> {
        if opts.batch == 0 || opts.workers == 0 {
            return Err(Error::Invalid(format!(
                "loader needs batch >= 1 and workers >= 1, got {} and {}",
                opts.batch, opts.workers
            )));
        }
        let epoch_size = set.len() / opts.batch;
        if epoch_size == 0 {
            return Err(Error::Invalid(format!(
                "{} training images make no full batch of {}",
                set.len(),
                opts.batch
            )));
        }
        if opts.start.1 >= epoch_size {
            return Err(Error::Invalid(format!(
                "start position {} is beyond the epoch's {epoch_size} batches",
                opts.start.1
            )));
        }
        // Two batches queued per worker keeps every worker busy while the caller consumes.
        let capacity = 2 * opts.batch.max(opts.workers);
        let (job_tx, job_rx) = sync_channel::<Job>(capacity);
        let (done_tx, done_rx) = sync_channel::<Done>(capacity);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::with_capacity(opts.workers + 1);
        {
            let (stop, len) = (stop.clone(), set.len());
            threads.push(std::thread::spawn(move || feed(job_tx, &stop, len, opts)));
        }
        let job_rx = Arc::new(Mutex::new(job_rx));
        for _ in 0..opts.workers {
            let (set, job_rx, done_tx, stop) =
                (set.clone(), job_rx.clone(), done_tx.clone(), stop.clone());
            let seed = opts.seed;
            let augment = opts.augment;
            threads.push(std::thread::spawn(move || {
                work(&set, &job_rx, &done_tx, &stop, seed, augment)
            }));
        }
        Ok(Self {
            opts,
            device,
            epoch_size,
            next: opts.start,
            next_seq: 0,
            pending: BTreeMap::new(),
            results: Some(done_rx),
            stop,
            threads,
        })
    }

    /// Batches per epoch (`len / batch`).
    pub fn epoch_size(&self) -> usize {
        self.epoch_size
    }

    /// (epoch, position) of the batch the next call returns: what a checkpoint stores to resume.
    pub fn position(&self) -> (u64, usize) {
        self.next
    }

    fn take(&mut self, seq: u64) -> Result<Sample> {
        loop {
            if let Some(r) = self.pending.remove(&seq) {
                return r;
            }
            let rx = self
                .results
                .as_ref()
                .ok_or_else(|| Error::Invalid("loader is stopped".into()))?;
            match rx.recv() {
                Ok((k, r)) => {
                    self.pending.insert(k, r);
                }
                Err(_) => {
                    return Err(Error::Invalid(
                        "loader workers stopped before delivering every sample".into(),
                    ))
                }
            }
        }
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        let mut samples = Vec::with_capacity(self.opts.batch);
        let mut first_err = None;
        for _ in 0..self.opts.batch {
            let seq = self.next_seq;
            self.next_seq += 1;
            // Every sample of the batch is taken, failed or not, so the next batch starts at
            // the right job.
            match self.take(seq) {
                Ok(s) => samples.push(s),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let (epoch, pos) = self.next;
        self.next = if pos + 1 == self.epoch_size {
            (epoch + 1, 0)
        } else {
            (epoch, pos + 1)
        };
        Some(match first_err {
            Some(e) => Err(e),
            None => Batch::from_samples(&samples, &self.device).map_err(Error::from),
        })
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver makes blocked workers' sends fail; their exit drops the job
        // receiver, which ends the feeder's blocked send.
        self.results = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Queues (seq, index, epoch) jobs from `opts.start` on, until the loader stops.
fn feed(tx: SyncSender<Job>, stop: &AtomicBool, len: usize, opts: LoaderOptions) {
    let epoch_size = len / opts.batch;
    let (mut epoch, mut pos) = opts.start;
    let mut seq = 0u64;
    loop {
        let order = epoch_order(len, opts.seed, epoch);
        for b in pos..epoch_size {
            for &index in &order[b * opts.batch..(b + 1) * opts.batch] {
                if stop.load(Ordering::Relaxed) || tx.send(Job { seq, index, epoch }).is_err() {
                    return;
                }
                seq += 1;
            }
        }
        epoch += 1;
        pos = 0;
    }
}

fn work(
    set: &TrainSet,
    jobs: &Mutex<Receiver<Job>>,
    done: &SyncSender<Done>,
    stop: &AtomicBool,
    seed: u64,
    augment: bool,
) {
    loop {
        // The lock is held only while waiting for one job.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let aug = augment.then_some((seed, job.epoch));
        let r =
            catch_unwind(AssertUnwindSafe(|| set.sample(job.index, aug))).unwrap_or_else(|_| {
                Err(Error::Invalid(format!(
                    "loader worker panicked on sample index {}",
                    job.index
                )))
            });
        if done.send((job.seq, r)).is_err() {
            return;
        }
    }
}
