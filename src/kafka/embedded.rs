//! The embedded development broker: librdkafka's mock cluster, in process,
//! listening on 127.0.0.1.
//!
//! librdkafka's mock cluster handle is not `Send`, so one thread owns it and
//! serves requests (topic creation, fault injection) over a channel. The mock
//! cluster answers no CreateTopics request; topics are created here. It keeps
//! about 5 MiB per partition, so it is for trying hookstream out and for
//! tests, never for data that matters.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rdkafka::mocking::MockCluster;
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

/// A running in-process mock Kafka cluster.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap: String,
    commands: mpsc::Sender<Command>,
    thread: Option<thread::JoinHandle<()>>,
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
                let cluster = match MockCluster::new(brokers) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!("starting the mock cluster: {e}")));
                        return;
                    }
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
            commands: tx,
            thread: Some(thread),
        })
    }

    /// `bootstrap.servers` of the cluster (127.0.0.1 ports).
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    fn call(&self, make: impl FnOnce(mpsc::Sender<Result<()>>) -> Command) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(make(tx))
            .map_err(|_| anyhow!("embedded broker stopped"))?;
        rx.recv().map_err(|_| anyhow!("embedded broker stopped"))?
    }

    /// Creates a topic unless it exists (the mock cluster answers no
    /// CreateTopics request).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        self.call(|tx| Command::CreateTopic(name.to_string(), partitions, tx))
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
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
