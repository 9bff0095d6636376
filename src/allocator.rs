//! The process's memory allocators, as the service and the bench see them:
//! handing back to the system what they keep of memory already freed.
//!
//! A leaf: it imports no other module of the crate.

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
