//! A delivery's place in its device's line (`ordering = "per_device"`):
//! the ticket the dispatcher gives the one delivery of a device it lets go,
//! and what the sender does instead of writing that delivery to a tier.
//!
//! While a ticket lives, the device's later events wait at the dispatcher;
//! dropping it (delivered, dead-lettered, or dropped at shutdown or after
//! a revoke) tells the dispatcher to let the next one go. A delivery with a
//! ticket that must wait (a retry's backoff, an open circuit, a full queue,
//! a disabled endpoint) waits here, in memory, and goes back to the
//! dispatcher when due, with its ticket: its device's line does not move
//! meanwhile, and its offset on the lane stays uncommitted, so a restart
//! reads it (and the line behind it) again in order. Touches no queue and
//! no writer.

use std::time::Duration;

use tokio::sync::mpsc;

use super::Delivery;

/// What comes back to the dispatcher from a line's delivery.
#[derive(Debug)]
pub enum LineReturn {
    /// The ticket `id` ended: the device's next delivery may go.
    Done(u64),
    /// The delivery waited in place and is due again (its ticket inside).
    Again(Delivery),
}

/// The right of one delivery to be its device's one delivery under way.
#[derive(Debug)]
pub struct LineTicket {
    id: u64,
    returns: mpsc::UnboundedSender<LineReturn>,
}

impl LineTicket {
    /// Ticket `id`, reporting to `returns`.
    pub fn new(id: u64, returns: mpsc::UnboundedSender<LineReturn>) -> Self {
        Self { id, returns }
    }

    /// Its id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for LineTicket {
    fn drop(&mut self) {
        // The dispatcher gone (shutdown): nobody waits for the line.
        let _ = self.returns.send(LineReturn::Done(self.id));
    }
}

/// Keeps `delivery` (which holds a ticket) for `delay`, then hands it back
/// to the dispatcher; a delivery without a ticket is handed back at once.
pub(super) fn wait_in_place(delivery: Delivery, delay: Duration) {
    let Some(returns) = delivery.line.as_ref().map(|t| t.returns.clone()) else {
        return;
    };
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        // A dispatcher that stopped drops it: its offset is not committed.
        let _ = returns.send(LineReturn::Again(delivery));
    });
}
