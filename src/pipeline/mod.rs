//! The pipeline: wires consumer → index → senders → ack tracker → commits.
//!
//! [`Pipeline::start`] builds every stage and spawns the dispatcher
//! ([`dispatcher`]), the one task that owns offsets and routing. Input
//! topics and retry tiers are read by one consumer in one group; retry
//! partitions are gated by due time ([`gate`]).

mod dispatcher;
pub mod gate;
pub mod lines;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::DisableCause;
use crate::config::{Config, ConfigError};
use crate::deliver::client::HttpClients;
use crate::deliver::host::HostLimits;
use crate::deliver::sender::{DisableHook, SenderDeps};
use crate::index::attempt_log::AttemptLog;
use crate::index::{Endpoint, EndpointRegistry, EndpointStore};
use crate::kafka::{self, EmbeddedBroker};
use crate::outcome::backoff::{Backoff, RetryTiers};
use crate::outcome::policy::{DisabledPolicy, RetryPolicy};
use crate::retry::writer::OutcomeWriter;
use crate::source::consumer::SourceConsumer;
use crate::source::extract::Extractor;
use crate::source::topics::TopicTable;
use dispatcher::{Dispatcher, Timing};

/// Where the pipeline's Kafka is.
#[derive(Debug, Clone)]
pub enum BrokerTarget {
    /// A cluster at these bootstrap servers.
    External(String),
    /// The in-process mock cluster.
    Embedded(Arc<EmbeddedBroker>),
}

impl BrokerTarget {
    /// Bootstrap servers.
    pub fn bootstrap(&self) -> &str {
        match self {
            Self::External(s) => s,
            Self::Embedded(b) => b.bootstrap_servers(),
        }
    }

    fn embedded(&self) -> Option<&EmbeddedBroker> {
        match self {
            Self::External(_) => None,
            Self::Embedded(b) => Some(b),
        }
    }
}

/// Counters a running pipeline exposes (progress displays, tests).
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Records consumed from input topics.
    pub consumed: AtomicU64,
    /// Records consumed from retry tiers.
    pub retries_consumed: AtomicU64,
    /// Records dead-lettered as `invalid_event`.
    pub invalid: AtomicU64,
    /// Offsets committed (partition commits).
    pub commits: AtomicU64,
    /// Endpoints with a sender now (made on an endpoint's first delivery,
    /// dropped after it had nothing to do for a while).
    pub senders: AtomicU64,
    /// Set when the consumer received its first assignment (possibly an
    /// empty one): it has joined its group. Readiness reads it.
    pub assigned: AtomicBool,
    /// Assigned partitions that should be fetching and are not (see
    /// `hookstream_partitions_stalled`). Readiness reads it.
    pub stalled_partitions: AtomicU64,
    /// Input-topic partitions assigned now.
    pub input_partitions: AtomicU64,
    /// Retry-tier partitions assigned now.
    pub tier_partitions: AtomicU64,
}

/// A running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
    stats: Arc<PipelineStats>,
    registry: Arc<EndpointRegistry>,
    writer: OutcomeWriter,
    attempt_log: Option<Arc<AttemptLog>>,
}

/// Checks what the configuration's plain data cannot show by itself, with
/// the stages that own it: every source's extraction rules compile, and
/// every endpoint is valid (URL, destination, secrets from `env`). Errors
/// name the key (`sources[0].device`, `endpoints[2].url`), so `hookstream
/// run` exits 2 before it connects to anything.
pub fn check_config(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (i, source) in config.sources.iter().enumerate() {
        Extractor::from_config(source)
            .map_err(|(field, msg)| ConfigError::new(format!("sources[{i}].{field}"), msg))?;
    }
    let allow_private = config.delivery.allow_private_destinations;
    let types = crate::source::types::of_config(config);
    for (i, endpoint) in config.endpoints.iter().enumerate() {
        crate::index::endpoint::validate(endpoint, allow_private, env)
            .map_err(|e| ConfigError::new(format!("endpoints[{i}].{}", e.field), e.message))?;
        // Warned about, not refused: a file that ran before an upgrade
        // still starts (the API refuses such an endpoint).
        if let Some(why) = crate::source::types::unmatched(&endpoint.events, &types) {
            tracing::warn!(endpoint = %endpoint.id, "endpoints[{i}].events {why}: it will receive nothing");
        }
    }
    Ok(())
}

/// The auto-disable and backlog settings of `config`: the backlog waits on
/// the longest tier not longer than `disabled_backlog.recheck` (the first
/// tier when every tier is longer), and comes back at multiples of that
/// tier's delay.
fn disabled_policy(config: &Config, tiers: &RetryTiers) -> DisabledPolicy {
    let auto = config.delivery.auto_disable;
    let backlog = config.delivery.disabled_backlog;
    DisabledPolicy {
        auto_disable_after: auto.enabled.then(|| auto.after.get()),
        backlog_max_age: backlog.max_age.get(),
        backlog_recheck: tiers.delay(tiers.tier_for(backlog.recheck.get())),
    }
}

/// Takes the endpoints out of `config` (they live on in the endpoints, not
/// twice), validated and prepared.
fn build_endpoints(config: &mut Config) -> Result<Vec<Arc<Endpoint>>> {
    let env = |name: &str| std::env::var(name).ok();
    let configs = std::mem::take(&mut config.endpoints);
    // Collected into a Vec of its own size: collecting in place would keep
    // the configs' allocation (368 bytes an endpoint) for 8-byte pointers,
    // for as long as the index lives (46 MiB at 100 000 endpoints).
    let mut endpoints = Vec::with_capacity(configs.len());
    for (i, ep) in configs.into_iter().enumerate() {
        let endpoint = Endpoint::build(
            ep,
            config.delivery.allow_private_destinations,
            config.delivery.timeout.get(),
            &env,
        )
        .map_err(|e| anyhow::anyhow!("endpoints[{i}].{}: {}", e.field, e.message))?;
        endpoints.push(Arc::new(endpoint));
    }
    Ok(endpoints)
}

impl Pipeline {
    /// Validates the endpoints of `config`, creates topics as configured,
    /// and starts consuming input topics and retry tiers.
    pub async fn start(mut config: Config, broker: BrokerTarget) -> Result<Self> {
        let registry = EndpointRegistry::new(build_endpoints(&mut config)?);
        Self::start_with_registry(config, broker, registry).await
    }

    /// Like [`start`](Self::start), but delivers to the endpoints of
    /// `registry` (kept by an [`EndpointStore`](crate::index::EndpointStore))
    /// instead of `config.endpoints`.
    pub async fn start_with_registry(
        config: Config,
        broker: BrokerTarget,
        registry: Arc<EndpointRegistry>,
    ) -> Result<Self> {
        kafka::ensure_topics(&config, broker.bootstrap(), broker.embedded()).await?;
        Self::start_inner(config, broker, registry, None).await
    }

    /// Like [`start_with_registry`](Self::start_with_registry) with the
    /// registry of `store`; an endpoint that answers 410 Gone, or fails
    /// every attempt for `delivery.auto_disable.after`, is stored disabled
    /// (`disabled = {reason, at, cause}`), so every instance stops
    /// delivering to it, also after a restart. The owned topics exist
    /// already: whoever opened the store ensured them (the service does, once).
    pub async fn start_with_store(
        config: Config,
        broker: BrokerTarget,
        store: Arc<EndpointStore>,
    ) -> Result<Self> {
        let registry = Arc::clone(store.registry());
        let failing_reason = format!(
            "the endpoint failed every attempt for {} (delivery.auto_disable.after)",
            config.delivery.auto_disable.after
        );
        let on_disable = DisableHook(Arc::new(move |id: &str, cause: DisableCause| {
            let store = Arc::clone(&store);
            let id = id.to_string();
            let reason = match cause {
                DisableCause::Gone => "the endpoint answered 410 Gone".to_string(),
                DisableCause::Failing => failing_reason.clone(),
            };
            tokio::spawn(async move {
                match store.disable(&id, cause, &reason).await {
                    Ok(()) => {
                        tracing::warn!(endpoint = %id, cause = cause.as_str(), "endpoint stored as disabled; enable it through the API")
                    }
                    Err(e) => {
                        tracing::warn!(endpoint = %id, cause = cause.as_str(), error = %e, "storing the endpoint as disabled failed; this instance keeps it disabled until it changes or restarts")
                    }
                }
            });
        }));
        Self::start_inner(config, broker, registry, Some(on_disable)).await
    }

    async fn start_inner(
        config: Config,
        broker: BrokerTarget,
        registry: Arc<EndpointRegistry>,
        on_disable: Option<DisableHook>,
    ) -> Result<Self> {
        let bootstrap = broker.bootstrap().to_string();

        let tiers = RetryTiers::new(&config.topics.retry_tiers, |t| config.topics.retry_topic(t))
            .with_lane(config.topics.ordered_topic());
        let writer = OutcomeWriter::start(
            &config,
            &bootstrap,
            config.topics.dlq_topic(),
            tiers.clone(),
        )
        .await?;
        let clients = HttpClients::new(&config.delivery)?;
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let writer_handle = writer.clone();
        let backoff = Backoff::new(&config.delivery.backoff);
        let circuit_base =
            crate::outcome::circuit::first_open_interval(tiers.delay(0), backoff.max());
        let attempt_log = AttemptLog::start(&config, &bootstrap).await?;
        let deps = Arc::new(SenderDeps {
            clients,
            hosts: HostLimits::new(config.delivery.max_connections_per_host),
            writer: writer.clone(),
            acks: acks_tx.clone(),
            policy: RetryPolicy {
                backoff,
                max_attempts: config.delivery.max_attempts,
                retry_window: config.delivery.retry_window.get(),
                local_failure_delay: circuit_base,
                rules: crate::outcome::policy::RetryRules::DEFAULT,
                disabled: disabled_policy(&config, &tiers),
            },
            per_endpoint_labels: config.metrics.per_endpoint_labels,
            circuit_base,
            shared_metrics: std::sync::OnceLock::new(),
            on_disable,
            attempt_log: attempt_log.clone(),
            start_traces: config.delivery.start_traces,
        });
        let stats = Arc::new(PipelineStats::default());
        let topics = TopicTable::new(
            config.kafka.topics.iter().cloned(),
            tiers.topics().map(str::to_string),
        );
        let (source, inbound) = SourceConsumer::start(&config, &bootstrap, topics)?;
        let dispatcher = Dispatcher::new(
            Arc::clone(&registry),
            deps,
            writer,
            acks_tx,
            source,
            config.delivery.max_in_flight,
            Arc::clone(&stats),
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let timing = Timing {
            commit_interval: config.kafka.commit_interval.get(),
            drain_timeout: config.delivery.drain_timeout.get(),
        };
        let task = tokio::spawn(dispatcher.run(inbound, acks_rx, shutdown_rx, timing));
        tracing::info!(
            brokers = %bootstrap,
            topics = ?config.kafka.topics,
            retry_tiers = tiers.len(),
            endpoints = registry.snapshot().len(),
            "pipeline started"
        );
        Ok(Self {
            shutdown,
            task,
            stats,
            registry,
            writer: writer_handle,
            attempt_log,
        })
    }

    /// The live endpoint set (changes apply from the next record on).
    pub fn registry(&self) -> &Arc<EndpointRegistry> {
        &self.registry
    }

    /// Live counters.
    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }

    /// Whether the consumer has joined its group and got an assignment.
    pub fn has_assignment(&self) -> bool {
        self.stats.assigned.load(Ordering::Acquire)
    }

    /// Stops consuming, drains in-flight work (bounded by
    /// `delivery.drain_timeout`), commits final offsets, and returns.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        let result = self.task.await.context("pipeline task panicked");
        // Drained: nothing is in flight, unless the drain deadline passed,
        // and then those writes must not settle anything any more.
        self.writer.closed().await;
        if let Some(log) = self.attempt_log {
            // The activity log of the last attempts, before a restart.
            let _ = tokio::task::spawn_blocking(move || log.flush(Duration::from_secs(5))).await;
        }
        result?
    }

    /// Stops at once without draining or committing anything: what a crash
    /// does. In-flight events are consumed again by the next owner.
    pub fn abort(self) {
        self.task.abort();
        self.writer.close();
    }

    /// Whether the pipeline stopped by itself (an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until the pipeline task ends by itself.
    pub async fn stopped(&self) {
        while !self.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_needs_a_stage_is_checked_with_it_and_named() {
        let text = r#"
[kafka]
topics = ["in"]
[[sources]]
topic = "in"
[delivery]
allow_private_destinations = true
[[endpoints]]
id = "a"
url = "http://127.0.0.1:1/"
signature = "none"
[[endpoints]]
id = "b"
url = "not a url"
signature = "none"
"#;
        let config = Config::from_toml_with_env(text, &|_| None).unwrap();
        let err = check_config(&config, &|_| None).unwrap_err();
        assert_eq!(err.key, "endpoints[1].url");

        let mut config = config;
        config.endpoints.pop();
        config.sources[0].device = Some("not a pointer".into());
        let err = check_config(&config, &|_| None).unwrap_err();
        assert_eq!(err.key, "sources[0].device");
        config.sources[0].device = None;
        assert_eq!(check_config(&config, &|_| None), Ok(()));
    }
}
