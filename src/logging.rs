//! Where log lines go: standard error, through a writer that never fails.
//!
//! A log line that cannot be written (standard error closed, a pipe whose
//! reader went away, a full disk) is dropped. tracing-subscriber reports a
//! failed write with `eprintln!`, which panics when standard error is what
//! failed: the thread that logged died, and start-up could hang on it and
//! ignore SIGTERM. Losing a log line is better than losing the service.
//!
//! Colour codes are written only to a terminal, never with `NO_COLOR` set:
//! a log file or a collector gets plain text.
//!
//! Owns the log writer; what is logged, and at which level, is decided
//! where it happens.

use std::io::{self, IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;

/// A [`MakeWriter`] whose writers report every write as done, whatever
/// the one they wrap answers (`EBADF`, `EPIPE`, ...).
#[derive(Debug, Clone, Copy, Default)]
pub struct IgnoreErrors<M>(pub M);

/// What [`IgnoreErrors`] makes: `W`, with its errors swallowed.
#[derive(Debug)]
pub struct Lossy<W>(W);

impl<W: Write> Write for Lossy<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // A failed write drops the rest of the line: never an error, never
        // a retry that could spin.
        match self.0.write(buf) {
            Ok(n) if n > 0 || buf.is_empty() => Ok(n),
            _ => Ok(buf.len()),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let _ = self.0.write_all(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for IgnoreErrors<M> {
    type Writer = Lossy<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Lossy(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Lossy(self.0.make_writer_for(meta))
    }
}

/// Standard error, never failing: the writer of every log line.
pub fn stderr() -> IgnoreErrors<fn() -> io::Stderr> {
    IgnoreErrors(io::stderr)
}

/// Whether log lines on standard error may carry colour: only when it is a
/// terminal and `NO_COLOR` is unset or empty (<https://no-color.org>).
pub fn colour_on_stderr() -> bool {
    colour_allowed(io::stderr().is_terminal(), std::env::var_os("NO_COLOR"))
}

/// [`colour_on_stderr`] given its inputs (pure).
pub fn colour_allowed(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Writes `line` and a newline to standard error, ignoring failure (unlike
/// `eprintln!`, which panics when standard error is closed or broken).
pub fn eprint_line(line: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(line.as_bytes());
    let _ = err.write_all(b"\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose reader went away.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(libc::EBADF))
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_allowed(true, None));
        assert!(colour_allowed(true, Some("".into())));
        assert!(!colour_allowed(true, Some("1".into())));
        assert!(!colour_allowed(false, None));
    }

    #[test]
    fn write_errors_are_swallowed() {
        let make = IgnoreErrors(|| Broken);
        let mut w = make.make_writer();
        assert_eq!(w.write(b"a log line\n").unwrap(), 11);
        w.write_all(b"another\n").unwrap();
        w.flush().unwrap();
        assert_eq!(w.write(b"").unwrap(), 0);
        // A line logged through it comes back as written.
        let subscriber = tracing_subscriber::fmt()
            .with_writer(IgnoreErrors(|| Broken))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!("dropped, not a panic");
        });
    }
}
