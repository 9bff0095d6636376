//! One way to take a lock: a mutex poisoned by a panic elsewhere still
//! guards consistent data here (every critical section leaves it whole), so
//! the guard is taken rather than the panic spread.

use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, taking the guard of a poisoned one.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
