//! Fault injection for tests: makes an endpoint's sender panic, so that
//! tests can show a panic is contained (the process carries on, what the
//! sender held is dead-lettered). Nothing in the service calls
//! [`inject_sender_panics`]; unarmed, the check is one relaxed atomic load.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

static ARMED: AtomicBool = AtomicBool::new(false);
static PANICS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

/// Makes the next `times` attempts of endpoint `endpoint` panic in this
/// process. For tests only.
#[doc(hidden)]
pub fn inject_sender_panics(endpoint: &str, times: u32) {
    let mut panics = crate::core::lock(&PANICS);
    panics
        .get_or_insert_with(HashMap::new)
        .insert(endpoint.to_string(), times);
    ARMED.store(true, Ordering::Release);
}

/// Panics when a panic was injected for `endpoint` and is still due.
pub(crate) fn maybe_panic(endpoint: &str) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let due = {
        let mut panics = crate::core::lock(&PANICS);
        match panics.as_mut().and_then(|p| p.get_mut(endpoint)) {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    };
    if due {
        panic!("fault injected into the sender of endpoint `{endpoint}`");
    }
}
