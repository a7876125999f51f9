//! The concurrency bound: at most `max_concurrent` requests run at once; as many more wait
//! for a slot (at most the request time limit), and the rest are answered `503` at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    wait: Duration,
}

/// Why a request got no slot.
#[derive(Debug)]
pub enum Busy {
    QueueFull(usize),
    WaitedTooLong(Duration),
}

impl std::fmt::Display for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Busy::QueueFull(n) => write!(f, "{n} requests running and {n} waiting"),
            Busy::WaitedTooLong(d) => write!(f, "no free slot within {} ms", d.as_millis()),
        }
    }
}

impl Admission {
    pub fn new(max_concurrent: u32, wait: Duration) -> Self {
        let n = max_concurrent as usize;
        Admission {
            slots: Arc::new(Semaphore::new(n)),
            waiting: AtomicUsize::new(0),
            queue: n,
            wait,
        }
    }

    /// A slot, held until the permit is dropped.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Busy> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Busy::QueueFull(self.queue));
        }
        let waited = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Busy::WaitedTooLong(self.wait)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_server_queues_then_refuses() {
        let a = Arc::new(Admission::new(1, Duration::from_millis(100)));
        let first = a.admit().await.expect("a free slot");
        let queued = tokio::spawn({
            let a = a.clone();
            async move { a.admit().await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert!(matches!(a.admit().await, Err(Busy::QueueFull(1))));
        drop(first);
        assert!(
            queued.await.unwrap().is_ok(),
            "the waiting request got the slot"
        );
        let held = a.admit().await.unwrap();
        assert!(matches!(a.admit().await, Err(Busy::WaitedTooLong(_))));
        drop(held);
    }
}
