//! A change of shared state that both threads and async tasks wait for.
//!
//! The services keep their state under a `Mutex` and block on a `Condvar` where a call must
//! wait (a Delete for a killed process's exit). The long waits containerd keeps open, one per
//! container and per pod (Wait, WaitSandbox), are awaited by the async server instead, so
//! that a thousand of them hold no thread: [`Changed`] wakes both kinds of waiter.

use std::sync::{Condvar, LockResult, MutexGuard, WaitTimeoutResult};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Default)]
pub struct Changed {
    threads: Condvar,
    tasks: Notify,
}

impl Changed {
    /// Wake every waiter, blocked or awaiting.
    pub fn notify_all(&self) {
        self.threads.notify_all();
        self.tasks.notify_waiters();
    }

    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        self.threads.wait(guard)
    }

    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        self.threads.wait_timeout(guard, timeout)
    }

    /// Await the first `Some` of `check`, called now and after each change. The waiter is
    /// registered before each check, so a change between the check and the await wakes it.
    pub async fn until<R>(&self, mut check: impl FnMut() -> Option<R>) -> R {
        loop {
            let mut changed = std::pin::pin!(self.tasks.notified());
            changed.as_mut().enable();
            if let Some(r) = check() {
                return r;
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn an_awaiting_task_wakes_on_a_change_made_by_a_thread() {
        let state = Arc::new((Mutex::new(0u32), Changed::default()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let writer = state.clone();
        let thread = std::thread::spawn(move || {
            for _ in 0..3 {
                std::thread::sleep(Duration::from_millis(20));
                *writer.0.lock().unwrap() += 1;
                writer.1.notify_all();
            }
        });
        let seen = rt.block_on(async {
            let three = state.1.until(|| {
                let v = *state.0.lock().unwrap();
                (v >= 3).then_some(v)
            });
            tokio::time::timeout(Duration::from_secs(5), three).await
        });
        thread.join().unwrap();
        assert_eq!(seen.expect("woken before the timeout"), 3);
    }

    #[test]
    fn a_blocked_thread_wakes_on_a_change() {
        let state = Arc::new((Mutex::new(false), Changed::default()));
        let writer = state.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            *writer.0.lock().unwrap() = true;
            writer.1.notify_all();
        });
        let mut done = state.0.lock().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !*done && std::time::Instant::now() < deadline {
            done = state
                .1
                .wait_timeout(done, Duration::from_secs(1))
                .unwrap()
                .0;
        }
        assert!(*done);
        drop(done);
        thread.join().unwrap();
    }
}
