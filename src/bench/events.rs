//! The events the bench produces: realistic Mender status events from a
//! fleet of devices, stamped with their send time, and sent in chunks.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

/// Nanoseconds since the Unix epoch (0 before it).
pub(super) fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Devices the bench's events come from.
pub(super) const DEVICES: u64 = 100_000;

/// Devices of (g)'s events: 1 000 of its 100 000 endpoints get traffic.
pub(super) const SPARSE_DEVICES: u64 = 1_000;

/// Event `i`, from one of [`DEVICES`] devices.
pub(super) fn event_body(i: u64, sent_ns: u128) -> String {
    device_event_body(i, sent_ns, DEVICES)
}

/// Event `i`, from device `i % devices`.
pub(super) fn device_event_body(i: u64, sent_ns: u128, devices: u64) -> String {
    format!(
        r#"{{"id":"bench-{i}","type":"device-status-changed","data":{{"id":"dev-{}","status":"accepted"}},"time":"2026-04-15T12:00:00Z","sent_ns":{sent_ns}}}"#,
        i % devices.max(1)
    )
}

/// Awaits `sends` ten thousand at a time (the producer batches them).
pub(super) async fn send_in_chunks<F>(sends: impl Iterator<Item = F>) -> Result<()>
where
    F: std::future::Future<Output = Result<()>>,
{
    let mut pending = Vec::with_capacity(10_000);
    for send in sends {
        pending.push(send);
        if pending.len() == 10_000 {
            for r in futures::future::join_all(std::mem::take(&mut pending)).await {
                r?;
            }
        }
    }
    for r in futures::future::join_all(pending).await {
        r?;
    }
    Ok(())
}
