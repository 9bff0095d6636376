//! The process's memory allocators, as the service and the bench see them:
//! handing back to the system what they keep of memory already freed.
//!
//! A leaf: it imports no other module of the crate.

use libmimalloc_sys::{mi_option_set, mi_option_t};

/// mimalloc's `mi_option_purge_delay` (`mi_option_e` of the mimalloc v3
/// that libmimalloc-sys bundles; its Rust bindings do not name it). A test
/// recognises it by its default.
const OPTION_PURGE_DELAY: mi_option_t = 15;
/// mimalloc's `mi_option_allow_thp`, as [`OPTION_PURGE_DELAY`].
const OPTION_ALLOW_THP: mi_option_t = 43;
/// How long mimalloc keeps freed memory before giving it back (its default
/// is 1 s).
pub const PURGE_DELAY_MS: i64 = 100;

/// Sets the allocator up for a long-running service whose resident memory
/// is watched: first thing in `main`, before any thread starts. Each
/// setting is left alone when its `MIMALLOC_*` variable is set.
///
/// - No transparent huge pages (`MIMALLOC_ALLOW_THP`): mimalloc asks for
///   2 MiB pages on its arenas, and a huge page is resident whole once any
///   byte of it is touched. In bench (i) (100 000 endpoints, traffic to
///   1 000) 150 MiB of a 266 MiB peak were huge pages; without them the
///   peak was 244-250 MiB against 274, and bench (a)'s CPU per event did
///   not move.
/// - Freed memory goes back after 100 ms instead of 1 s
///   (`MIMALLOC_PURGE_DELAY`): start-up frees hundreds of MiB while it reads
///   100 000 endpoints. With both, bench (i) peaked at 209 MiB.
pub fn configure() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // SAFETY: sets an option mimalloc reads when it maps memory, and a
        // flag of this process the kernel reads at page faults.
        unsafe {
            mi_option_set(OPTION_ALLOW_THP, 0);
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an option mimalloc reads when it schedules a purge.
        unsafe { mi_option_set(OPTION_PURGE_DELAY, PURGE_DELAY_MS as _) };
    }
}

/// Returns to the system what the allocators keep of memory already freed:
/// mimalloc (the binary's allocator, and with its `override` feature
/// librdkafka's) and glibc's `malloc_trim` for anything still on it.
///
/// The service calls it once its start-up is done: reading a configuration
/// of 100 000 endpoints takes a few hundred MiB for moments, which mimalloc
/// would otherwise keep resident for the life of the process. Cheap (it
/// walks the free lists once); not for a hot path.
pub fn release_freed_memory() {
    // SAFETY: both only walk their allocator's own free lists; neither
    // frees memory in use.
    unsafe {
        libc::malloc_trim(0);
        libmimalloc_sys::mi_collect(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mimalloc's current value of `option`.
    fn option(option: mi_option_t) -> i64 {
        // SAFETY: reads an option.
        #[allow(clippy::useless_conversion)] // c_long is i32 on some targets
        i64::from(unsafe { libmimalloc_sys::mi_option_get(option) })
    }

    /// The option numbers are the bundled mimalloc's: before `configure`
    /// each has its documented default (allow_thp 1, purge_delay 1000 ms),
    /// and after it the value set.
    #[test]
    fn option_numbers_name_the_options_they_set() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some()
            || std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
        {
            return;
        }
        assert_eq!(option(OPTION_ALLOW_THP), 1);
        assert_eq!(option(OPTION_PURGE_DELAY), 1000);
        configure();
        assert_eq!(option(OPTION_ALLOW_THP), 0);
        assert_eq!(option(OPTION_PURGE_DELAY), PURGE_DELAY_MS);
    }
}
