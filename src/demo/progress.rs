//! The demo's live progress table: per endpoint, delivered, dead-lettered
//! and the rate, redrawn in place on a terminal.
//!
//! Reads the pipeline's counters and the ledger; changes neither.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::pipeline::Pipeline;

use super::ENDPOINTS;
use super::ledger::Ledger;

/// The live per-endpoint table: redrawn in place on a terminal, printed as
/// periodic lines otherwise.
pub(super) struct ProgressTable {
    terminal: bool,
    drawn_lines: usize,
    last_delivered: Vec<u64>,
    last_at: Instant,
    last_line: Instant,
}

impl ProgressTable {
    pub(super) fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            terminal: std::io::stdout().is_terminal(),
            drawn_lines: 0,
            last_delivered: vec![0; ENDPOINTS.len()],
            last_at: Instant::now(),
            last_line: Instant::now(),
        }
    }

    /// Other output was printed below the table: draw a fresh one next.
    pub(super) fn forget_drawn(&mut self) {
        self.drawn_lines = 0;
    }

    pub(super) fn draw(
        &mut self,
        started: Instant,
        pipeline: &Pipeline,
        ledger: &Mutex<Ledger>,
        force: bool,
    ) {
        if !self.terminal && !force && self.last_line.elapsed() < Duration::from_secs(3) {
            return;
        }
        self.last_line = Instant::now();
        let elapsed = self.last_at.elapsed().as_secs_f64().max(0.001);
        self.last_at = Instant::now();
        let stats = pipeline.stats();
        let mut lines = vec![
            format!(
                "[{:>5.1}s] consumed {} events ({} retries read back, {} invalid)",
                started.elapsed().as_secs_f64(),
                stats.consumed.load(Ordering::Relaxed),
                stats.retries_consumed.load(Ordering::Relaxed),
                stats.invalid.load(Ordering::Relaxed)
            ),
            format!(
                "  {:<11} {:>9} {:>9} {:>13} {:>9} {:>9}",
                "endpoint", "delivered", "retrying", "dead-lettered", "p99 ms", "rate/s"
            ),
        ];
        let l = ledger.lock().ok();
        for (i, ep) in ENDPOINTS.iter().enumerate() {
            let s = pipeline.registry().activity(ep.id).stats();
            let expected = l
                .as_ref()
                .and_then(|l| l.expected.get(ep.id).map(HashSet::len))
                .unwrap_or(0) as u64;
            let dead = l
                .as_ref()
                .and_then(|l| l.dead.get(ep.id).map(HashSet::len))
                .unwrap_or(0) as u64;
            let retrying =
                (s.retry_scheduled + s.deferred).min(expected.saturating_sub(s.delivered + dead));
            let rate = (s.delivered - self.last_delivered[i].min(s.delivered)) as f64 / elapsed;
            self.last_delivered[i] = s.delivered;
            lines.push(format!(
                "  {:<11} {:>9} {:>9} {:>13} {:>9.0} {:>9.0}",
                ep.id, s.delivered, retrying, dead, s.latency_p99_ms, rate
            ));
        }
        let mut out = String::new();
        if self.terminal && self.drawn_lines > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn_lines));
        }
        for line in &lines {
            if self.terminal {
                out.push_str("\x1b[2K");
            }
            out.push_str(line);
            out.push('\n');
        }
        self.drawn_lines = lines.len();
        print!("{out}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
}
