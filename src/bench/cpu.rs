//! CPU time of processes and of groups of threads, from `/proc`, so that a
//! bench run can tell the pipeline's CPU apart from the receiver's (threads
//! of this process) and the broker's (a child process).

use std::sync::{Arc, Mutex};

/// CPU seconds (user + system) process `pid` (`self` or a number) used so
/// far, from `/proc/<pid>/stat`.
pub fn process_cpu_secs(pid: &str) -> Option<f64> {
    stat_cpu_secs(&format!("/proc/{pid}/stat"))
}

/// CPU seconds of the threads `tids` of this process, to the nanosecond
/// (their `schedstat`). Threads that ended count no more (their time is in
/// the process's).
pub fn threads_cpu_secs(tids: &ThreadIds) -> f64 {
    let ns: u64 = tids
        .list()
        .iter()
        .filter_map(|tid| schedstat_ns(&format!("/proc/self/task/{tid}/schedstat")))
        .sum();
    ns as f64 / 1e9
}

/// The time on a CPU a `schedstat` file gives, in nanoseconds.
fn schedstat_ns(path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// CPU seconds of this whole process so far, to the nanosecond
/// (`CLOCK_PROCESS_CPUTIME_ID`; `/proc`'s figures count in 10 ms ticks,
/// too coarse for a run of a few tens of milliseconds).
pub fn own_cpu_secs_precise() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the clock's value into `ts`, a valid timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU seconds the live threads of process `pid` used so far, to the
/// nanosecond: the sum of their `/proc/<pid>/task/<tid>/schedstat` (time on
/// a CPU). Threads that ended count no more: for a process whose threads
/// outlive the measurement (the embedded broker's).
pub fn threads_cpu_secs_precise(pid: &str) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let ns: u64 = tasks
        .filter_map(|task| schedstat_ns(task.ok()?.path().join("schedstat").to_str()?))
        .sum();
    Some(ns as f64 / 1e9)
}

/// utime + stime of a `stat` file, in seconds.
fn stat_cpu_secs(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some((utime + stime) / (ticks.max(1) as f64))
}

/// The kernel thread ids of a group of threads (a runtime's workers), each
/// added by the thread itself when it starts.
#[derive(Debug, Clone, Default)]
pub struct ThreadIds(Arc<Mutex<Vec<libc::pid_t>>>);

impl ThreadIds {
    /// Adds the calling thread.
    pub fn add_current(&self) {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        if let Ok(mut l) = self.0.lock() {
            l.push(tid);
        }
    }

    /// The ids so far.
    pub fn list(&self) -> Vec<libc::pid_t> {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// A tokio runtime on threads of its own, whose CPU time is counted apart
/// from the rest of the process. Dropping it stops its threads.
pub struct OwnRuntime {
    handle: tokio::runtime::Handle,
    threads: ThreadIds,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OwnRuntime {
    /// Starts a multi-threaded runtime of `workers` threads named `name`.
    pub fn start(name: &str, workers: usize) -> anyhow::Result<Self> {
        let threads = ThreadIds::default();
        let on_start = threads.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .max_blocking_threads(1)
            .thread_name(name)
            .on_thread_start(move || on_start.add_current())
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_background();
            })?;
        Ok(Self {
            handle,
            threads,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Its handle, to spawn on.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// CPU seconds its threads used so far.
    pub fn cpu_secs(&self) -> f64 {
        threads_cpu_secs(&self.threads)
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for OwnRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnRuntime")
            .field("threads", &self.threads.list())
            .finish()
    }
}
