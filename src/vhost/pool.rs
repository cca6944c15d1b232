//! A fixed set of worker threads running request jobs (`--thread-pool-size`).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use log::warn;

/// One unit of work: serve one descriptor chain.
pub type Job = Box<dyn FnOnce() + Send>;

/// Jobs queued per worker before `run` blocks the queue thread (back
/// pressure instead of unbounded memory).
const QUEUE_PER_WORKER: usize = 256;

/// Worker threads sharing one job queue. Dropping the pool lets queued
/// jobs finish and joins the threads.
#[derive(Debug)]
pub struct Pool {
    tx: Option<SyncSender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `size` workers.
    pub fn new(size: usize) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel::<Job>(size.saturating_mul(QUEUE_PER_WORKER));
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(size);
        for i in 0..size {
            let rx = Arc::clone(&rx);
            let t = std::thread::Builder::new()
                .name(format!("fs-worker-{i}"))
                .spawn(move || worker(&rx))?;
            threads.push(t);
        }
        Ok(Self {
            tx: Some(tx),
            threads,
        })
    }

    /// Queues a job (blocks while the queue is full).
    pub fn run(&self, job: Job) {
        if let Some(tx) = &self.tx {
            if tx.send(job).is_err() {
                warn!("worker pool is gone; request dropped");
            }
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        // Hold the lock only to take a job, not to run it.
        let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        drop(self.tx.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn test_pool_runs_every_job_before_drop_returns() {
        let count = Arc::new(AtomicUsize::new(0));
        let pool = Pool::new(3).unwrap();
        for _ in 0..100 {
            let c = Arc::clone(&count);
            pool.run(Box::new(move || {
                c.fetch_add(1, Ordering::Relaxed);
            }));
        }
        drop(pool);
        assert_eq!(count.load(Ordering::Relaxed), 100);
    }
}
