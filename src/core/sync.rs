//! One way to take a lock: a mutex poisoned by a panic elsewhere still
//! guards consistent data here (every critical section leaves it whole), so
//! the guard is taken rather than the panic spread. And one way to stop a
//! background task and know it is gone.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinHandle;

/// Locks `mutex`, taking the guard of a poisoned one.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Aborts `task` and waits until it has ended (its future, and what it
/// owns, dropped), at most `limit`. Takes the handle by reference, so an
/// owner shared behind an `Arc` can stop its task too.
pub async fn abort_and_wait(task: &JoinHandle<()>, limit: Duration) {
    task.abort();
    let deadline = tokio::time::Instant::now() + limit;
    while !task.is_finished() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
