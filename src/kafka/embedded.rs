//! The embedded development broker: librdkafka's mock cluster, in process,
//! listening on 127.0.0.1.
//!
//! librdkafka's mock cluster handle is not `Send`, so one thread owns it and
//! serves requests (topic creation, fault injection) over a channel. The mock
//! cluster answers no CreateTopics request; topics are created here. It keeps
//! about 5 MiB per partition, so it is for trying hookstream out and for
//! tests, never for data that matters.
//!
//! The same broker can run in a child process instead
//! ([`EmbeddedBroker::spawn_process`], served by [`serve_over_stdio`]):
//! `hookstream bench` does that so that the broker's copy of the data is not
//! counted in the pipeline's memory, as it would not be in production.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

enum Command {
    CreateTopic(String, i32, mpsc::Sender<Result<()>>),
    BrokerDown(i32, mpsc::Sender<Result<()>>),
    BrokerUp(i32, mpsc::Sender<Result<()>>),
    RequestErrors(RDKafkaApiKey, Vec<RDKafkaRespErr>, mpsc::Sender<Result<()>>),
    RoundTripTime(i32, Duration, mpsc::Sender<Result<()>>),
    ClearRequestErrors(RDKafkaApiKey, mpsc::Sender<Result<()>>),
    Stop,
}

/// How long the mock cluster waits for more members before it assigns the
/// partitions of a new group (librdkafka's default, like Kafka's
/// `group.initial.rebalance.delay.ms`, is 3 s: every test, demo and bench
/// run would idle that long per group).
pub const GROUP_INITIAL_REBALANCE_DELAY: Duration = Duration::from_millis(100);

/// A client that owns a mock cluster of `brokers` brokers
/// (`test.mock.num.brokers`); the cluster lives as long as the client.
fn mock_cluster_owner(brokers: i32) -> Result<BaseProducer> {
    let owner: BaseProducer = ClientConfig::new()
        .set("test.mock.num.brokers", brokers.to_string())
        .set("client.id", "hookstream-embedded-broker")
        .create()
        .map_err(|e| anyhow!("starting the mock cluster: {e}"))?;
    // SAFETY: the pointer comes from a live client and is only used while
    // that client (which owns the cluster) is alive.
    unsafe {
        let cluster = rdkafka::bindings::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
        if cluster.is_null() {
            return Err(anyhow!("librdkafka made no mock cluster"));
        }
        rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(
            cluster,
            GROUP_INITIAL_REBALANCE_DELAY.as_millis() as i32,
        );
    }
    Ok(owner)
}

/// A running mock Kafka cluster, in this process or in a child.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap: String,
    backend: Backend,
}

/// Where the mock cluster runs.
#[derive(Debug)]
enum Backend {
    /// A thread of this process owns it.
    Thread {
        commands: mpsc::Sender<Command>,
        thread: Option<thread::JoinHandle<()>>,
    },
    /// A child process (`hookstream embedded-broker`) owns it; topics are
    /// created by a line on its stdin.
    Process {
        child: Child,
        link: Mutex<(ChildStdin, BufReader<ChildStdout>)>,
    },
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl EmbeddedBroker {
    /// Starts a mock cluster of `brokers` brokers.
    pub fn start(brokers: i32) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String>>();
        let thread = thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let owner = match mock_cluster_owner(brokers) {
                    Ok(owner) => owner,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let Some(cluster) = owner.client().mock_cluster() else {
                    let _ = ready_tx.send(Err(anyhow!("librdkafka made no mock cluster")));
                    return;
                };
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                let done = |reply: mpsc::Sender<Result<()>>, r: rdkafka::error::KafkaResult<()>| {
                    let _ = reply.send(r.map_err(|e| anyhow!("{e}")));
                };
                while let Ok(cmd) = rx.recv() {
                    match cmd {
                        Command::CreateTopic(name, partitions, reply) => {
                            let result = match cluster.create_topic(&name, partitions, 1) {
                                Err(rdkafka::error::KafkaError::MockCluster(
                                    rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                                )) => Ok(()),
                                other => other,
                            };
                            done(reply, result)
                        }
                        Command::BrokerDown(id, reply) => done(reply, cluster.broker_down(id)),
                        Command::BrokerUp(id, reply) => done(reply, cluster.broker_up(id)),
                        Command::RequestErrors(key, errors, reply) => {
                            cluster.request_errors(key, &errors);
                            let _ = reply.send(Ok(()));
                        }
                        Command::ClearRequestErrors(key, reply) => {
                            cluster.clear_request_errors(key);
                            let _ = reply.send(Ok(()));
                        }
                        Command::RoundTripTime(id, rtt, reply) => {
                            done(reply, cluster.broker_round_trip_time(id, rtt))
                        }
                        Command::Stop => break,
                    }
                }
            })
            .context("spawning the embedded broker thread")?;
        let bootstrap = ready_rx
            .recv()
            .context("embedded broker thread ended early")??;
        Ok(Self {
            bootstrap,
            backend: Backend::Thread {
                commands: tx,
                thread: Some(thread),
            },
        })
    }

    /// Starts a one-broker mock cluster in a child process running
    /// `exe embedded-broker` (see [`serve_over_stdio`]). Only topic creation
    /// is offered; fault injection needs [`start`](Self::start).
    pub fn spawn_process(exe: &Path) -> Result<Self> {
        let mut child = std::process::Command::new(exe)
            .arg("embedded-broker")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting `{} embedded-broker`", exe.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err(anyhow!("the broker process has no stdin/stdout pipe"));
        };
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .context("reading the broker process's bootstrap servers")?;
        let bootstrap = line.trim().to_string();
        if bootstrap.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(anyhow!("the broker process ended before it was ready"));
        }
        Ok(Self {
            bootstrap,
            backend: Backend::Process {
                child,
                link: Mutex::new((stdin, stdout)),
            },
        })
    }

    /// The broker process's id, when it runs in a child process.
    pub fn process_id(&self) -> Option<u32> {
        match &self.backend {
            Backend::Thread { .. } => None,
            Backend::Process { child, .. } => Some(child.id()),
        }
    }

    /// `bootstrap.servers` of the cluster (127.0.0.1 ports).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    fn call(&self, make: impl FnOnce(mpsc::Sender<Result<()>>) -> Command) -> Result<()> {
        let Backend::Thread { commands, .. } = &self.backend else {
            return Err(anyhow!(
                "the broker runs in a child process, which offers topic creation only"
            ));
        };
        let (tx, rx) = mpsc::channel();
        commands
            .send(make(tx))
            .map_err(|_| anyhow!("embedded broker stopped"))?;
        rx.recv().map_err(|_| anyhow!("embedded broker stopped"))?
    }

    /// Creates a topic unless it exists (the mock cluster answers no
    /// CreateTopics request).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        let Backend::Process { link, .. } = &self.backend else {
            return self.call(|tx| Command::CreateTopic(name.to_string(), partitions, tx));
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(anyhow!("topic name `{name}` is empty or has white space"));
        }
        let mut link = crate::core::lock(link);
        let (stdin, stdout) = &mut *link;
        writeln!(stdin, "create {name} {partitions}")
            .and_then(|()| stdin.flush())
            .context("writing to the broker process")?;
        let mut reply = String::new();
        stdout
            .read_line(&mut reply)
            .context("reading from the broker process")?;
        match reply.trim() {
            "ok" => Ok(()),
            "" => Err(anyhow!("the broker process ended")),
            other => Err(anyhow!(
                "creating topic `{name}`: {}",
                other.strip_prefix("error ").unwrap_or(other)
            )),
        }
    }

    /// Takes broker `id` (1-based) down: connections to it fail.
    pub fn broker_down(&self, id: i32) -> Result<()> {
        self.call(|tx| Command::BrokerDown(id, tx))
    }

    /// Brings broker `id` back.
    pub fn broker_up(&self, id: i32) -> Result<()> {
        self.call(|tx| Command::BrokerUp(id, tx))
    }

    /// Makes the next requests of `api` fail with `errors`, one each.
    pub fn request_errors(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]) -> Result<()> {
        self.call(|tx| Command::RequestErrors(api, errors.to_vec(), tx))
    }

    /// Forgets the errors queued by [`request_errors`](Self::request_errors).
    pub fn clear_request_errors(&self, api: RDKafkaApiKey) -> Result<()> {
        self.call(|tx| Command::ClearRequestErrors(api, tx))
    }

    /// Adds `rtt` of latency to every request to broker `id`.
    pub fn round_trip_time(&self, id: i32, rtt: Duration) -> Result<()> {
        self.call(|tx| Command::RoundTripTime(id, rtt, tx))
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        match &mut self.backend {
            Backend::Thread { commands, thread } => {
                let _ = commands.send(Command::Stop);
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
            Backend::Process { child, .. } => {
                // Its data is throwaway; nothing to flush.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Runs a one-broker mock cluster for a parent process
/// ([`EmbeddedBroker::spawn_process`]): prints its bootstrap servers on
/// stdout, then answers each `create <topic> <partitions>` line on stdin with
/// `ok` or `error <message>`, until stdin closes.
pub fn serve_over_stdio() -> Result<()> {
    let broker = EmbeddedBroker::start(1)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", broker.bootstrap_servers()).context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading stdin")?;
        let mut words = line.split_whitespace();
        let reply = match (words.next(), words.next(), words.next(), words.next()) {
            (Some("create"), Some(name), Some(partitions), None) => {
                match partitions.parse::<i32>() {
                    Ok(p) if p > 0 => match broker.create_topic(name, p) {
                        Ok(()) => "ok".to_string(),
                        Err(e) => format!("error {e:#}"),
                    },
                    _ => format!("error partitions `{partitions}` is not a positive number"),
                }
            }
            _ => format!("error unknown command `{line}` (expected `create <topic> <partitions>`)"),
        };
        writeln!(out, "{reply}").context("writing to stdout")?;
        out.flush().context("writing to stdout")?;
    }
    Ok(())
}
