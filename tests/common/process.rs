//! `hookstream run` as a child process, for tests that kill it: started
//! with a config text, its stderr kept in a file, SIGKILLed when dropped.
//! `HOOKSTREAM_BIN` points the tests at another build of the binary (to
//! measure an older version with the same test).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The binary under test.
pub fn hookstream_bin() -> PathBuf {
    std::env::var_os("HOOKSTREAM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hookstream")))
}

/// One `hookstream run` process.
pub struct Instance {
    /// Its name in messages.
    pub name: String,
    child: Child,
    log: PathBuf,
    metrics_port: Option<u16>,
}

impl Instance {
    /// Writes `config` to `<dir>/<name>.toml` and runs `hookstream run` with
    /// it; `RUST_LOG` comes from `log_env` (default `info`). Give the
    /// port of `[metrics].listen` as `metrics_port` to read its gauges.
    pub fn start(
        dir: &Path,
        name: &str,
        config: &str,
        metrics_port: Option<u16>,
        log_env: &str,
    ) -> Self {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("config written");
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(hookstream_bin())
            .args(["run", "--config"])
            .arg(&path)
            .env(
                "RUST_LOG",
                std::env::var(log_env).unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("hookstream starts");
        Self {
            name: name.to_string(),
            child,
            log,
            metrics_port,
        }
    }

    /// The value of unlabelled metric `name` on its `/metrics` (0 when
    /// unreadable).
    pub fn gauge(&self, name: &str) -> f64 {
        self.scrape()
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// The sum of the samples of labelled metric `name` whose labels
    /// contain `label` (say `outcome="deferred"`); 0 when unreadable.
    pub fn sum(&self, name: &str, label: &str) -> f64 {
        self.scrape()
            .lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
            .filter_map(|l| l.split_once('}'))
            .filter(|(labels, _)| labels.contains(label))
            .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
            .sum()
    }

    /// Its `/metrics` text (empty when unreadable).
    fn scrape(&self) -> String {
        use std::io::{Read, Write};
        let Some(port) = self.metrics_port else {
            return String::new();
        };
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        text
    }

    /// SIGKILL, and wait for it.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM; the exit code once it stopped (`None`: still running after
    /// `timeout`, then killed).
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.sigkill();
        None
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.sigkill();
    }
}
