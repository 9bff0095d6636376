//! Scenario (i) measured on the service a user runs: `hookstream run` in a
//! process of its own, so its peak RSS holds nothing of the bench (the
//! receiver, the producer and its preloaded records, the endpoint
//! configurations as the bench built them).
//!
//! The bench writes the scenario's configuration as a TOML file, creates
//! the service's topics on the embedded broker (which answers no
//! CreateTopics request; a broker given with `--brokers` gets them from the
//! service itself), starts `hookstream run --config <file>` with the
//! management API on an ephemeral port, and reads the child's `VmHWM` and
//! CPU time from `/proc/<pid>`. The peak covers the whole life of the
//! process: reading the configuration, building the index, and the run.
//! The child is stopped with SIGTERM and must exit cleanly.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::Bench;
use super::cpu::process_cpu_secs;
use super::report::{Measured, Memory};
use super::rss::{process_status_kib, reset_peak_rss};
use crate::config::{Config, PropertyValue};

/// Names a program the service is started under (`heaptrack`, say), to
/// profile it; the peak RSS and CPU read are then the wrapper's, not the
/// service's alone.
const WRAPPER_VAR: &str = "HOOKSTREAM_BENCH_SERVICE_WRAPPER";
/// Longest the service may take to deliver every event.
const RUN_TIMEOUT: Duration = Duration::from_secs(900);
/// Longest the service may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// `hookstream run` started by the bench; killed if dropped while running.
struct ServiceProcess {
    child: Child,
    dir: PathBuf,
}

impl ServiceProcess {
    /// Writes `config` to a file and starts `hookstream run` on it.
    fn start(config: Config) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "hookstream-bench-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("hookstream.toml");
        let text =
            crate::config::to_toml_lean(config).context("writing the service's configuration")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        let log = std::fs::File::create(dir.join("service.log"))
            .with_context(|| format!("creating the service's log in {}", dir.display()))?;
        let exe = std::env::current_exe().context("finding the hookstream executable")?;
        let mut command = match std::env::var_os(WRAPPER_VAR) {
            Some(wrapper) if !wrapper.is_empty() => {
                let mut c = Command::new(wrapper);
                c.arg(exe);
                c
            }
            _ => Command::new(exe),
        };
        let child = command
            .arg("run")
            .arg("--config")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting `hookstream run`")?;
        Ok(Self { child, dir })
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Whether the service has exited.
    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The last lines of the service's log, to explain a failure.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("service.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn stop(mut self) -> Result<()> {
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for the service")? {
                if !status.success() {
                    bail!("the service exited with {status}:\n{}", self.log_tail());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the service did not stop within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Bench {
    /// Runs `config` as `hookstream run` until `expected` events reached the
    /// receiver; the memory and CPU are the child process's.
    pub(super) async fn measure_service_process(
        &self,
        mut config: Config,
        expected: u64,
    ) -> Result<Measured> {
        // The child reaches the broker by its address.
        config.kafka.brokers = self.bootstrap.clone();
        if let Some(broker) = &self.broker {
            // The embedded broker answers no CreateTopics request: its
            // topics are made here, and the setting the pipeline gives it
            // (a short fetch wait) is set by hand.
            config
                .kafka
                .consumer
                .insert("fetch.wait.max.ms".into(), PropertyValue::Text("5".into()));
            crate::kafka::ensure_topics(&config, &self.bootstrap, Some(broker))
                .await
                .context("creating the service's topics")?;
            config.topics.create = false;
        }
        config.api.listen = "127.0.0.1:0".into();
        config.metrics.listen = String::new();

        let counts = Arc::clone(self.receiver.counts());
        counts.reset();
        let broker_pid = self.broker_pid_with_peak_reset();
        let mut service = ServiceProcess::start(config)?;
        let pid = service.pid();
        let cpu_now = || {
            (
                process_cpu_secs(&pid).unwrap_or(0.0),
                self.receiver.cpu_secs(),
                broker_pid.as_deref().and_then(process_cpu_secs),
            )
        };
        // At the first delivery: CPU so far, the RSS then, the start-up's
        // peak (and the peak reset for the run).
        let mut first = None;
        let waited = self
            .await_deliveries(
                expected,
                RUN_TIMEOUT,
                || {
                    let rss = process_status_kib(&pid, "VmRSS:").unwrap_or(0.0) / 1024.0;
                    let startup = process_status_kib(&pid, "VmHWM:").unwrap_or(0.0) / 1024.0;
                    reset_peak_rss(&pid);
                    first = Some((cpu_now(), rss, startup));
                },
                || service.exited(),
            )
            .await;
        if let Err(e) = waited {
            bail!("{e}; the service's log ends:\n{}", service.log_tail());
        }
        let peak = process_status_kib(&pid, "VmHWM:").unwrap_or(0.0) / 1024.0;
        let (at_first, startup_peak) = first.map_or((0.0, peak), |(_, rss, s)| (rss, s));
        let (process_cpu, receiver_cpu, broker_cpu) =
            super::cpu_since(first.map(|(cpu, _, _)| cpu), cpu_now());
        let broker_peak = broker_pid
            .and_then(|pid| process_status_kib(&pid, "VmHWM:"))
            .map(|kib| kib / 1024.0);
        tokio::task::block_in_place(|| service.stop())?;
        Ok(Measured {
            secs: counts.busy_secs(),
            requests: counts.requests.load(Ordering::Relaxed),
            memory: Memory {
                peak,
                before: at_first,
                broker_peak,
                startup_peak: Some(startup_peak),
            },
            cpu_secs: process_cpu.max(0.0),
            receiver_cpu_secs: receiver_cpu,
            broker_cpu_secs: broker_cpu,
        })
    }
}
