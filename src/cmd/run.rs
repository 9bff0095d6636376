//! `hookstream run`: the service, until SIGTERM or SIGINT.
//!
//! [`Service`] assembles one instance: owned topics, the endpoint store
//! (loaded from `<prefix>.endpoints`, config endpoints seeded), the
//! pipeline delivering to the store's registry, and the management API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::CommandError;
use crate::api::auth::Tokens;
use crate::api::{ApiServer, ApiState};
use crate::config::Config;
use crate::index::EndpointStore;
use crate::index::attempt_reader::AttemptReader;
use crate::index::device_store::DeviceStore;
use crate::kafka::{self, EmbeddedBroker};
use crate::pipeline::{BrokerTarget, Pipeline};

/// One running instance: store, pipeline and (unless `api.listen` is
/// empty) the management API.
#[derive(Debug)]
pub struct Service {
    pipeline: Pipeline,
    store: Arc<EndpointStore>,
    /// Follows `<prefix>.devices` into the registry's device directory.
    devices: Option<DeviceStore>,
    api: Option<ApiServer>,
    /// Keeps an embedded broker alive as long as the service (dropped last).
    broker: BrokerTarget,
}

impl Service {
    /// Creates topics as configured, loads the endpoint store, starts the
    /// pipeline on its registry and the API on `api.listen`.
    /// Each step that waits for the cluster says so in the log when it
    /// takes more than a second.
    pub async fn start(mut config: Config, target: BrokerTarget) -> Result<Self, CommandError> {
        let bootstrap = target.bootstrap().to_string();
        let embedded = match &target {
            BrokerTarget::Embedded(b) => Some(&**b),
            BrokerTarget::External(_) => None,
        };
        waiting_for(
            &bootstrap,
            "creating topics",
            kafka::ensure_topics(&config, &bootstrap, embedded),
        )
        .await?;
        let loading = format!("loading endpoints from {}", config.topics.endpoints_topic());
        // Seeded by the store, which lets go of them as it goes: its
        // registry holds them after, and nothing reads them from the
        // configuration.
        let seeds = std::mem::take(&mut config.endpoints);
        let store = waiting_for(
            &bootstrap,
            &loading,
            EndpointStore::open(&config, seeds, &bootstrap),
        )
        .await?;
        let devices = DeviceStore::open(&config, &bootstrap, store.registry().devices())?;
        let api_config = config.clone();
        let pipeline = waiting_for(
            &bootstrap,
            "starting the pipeline",
            Pipeline::start_with_store(config, target.clone(), Arc::clone(&store)),
        )
        .await?;
        let api = if api_config.api.listen.is_empty() {
            None
        } else {
            let (tokens, skipped) =
                Tokens::from_config(&api_config.api, &|name| std::env::var(name).ok());
            for s in skipped {
                tracing::warn!(token = %s, "API token not available: skipped");
            }
            let stats = Arc::clone(pipeline.stats());
            let consuming = Arc::new(move || crate::api::ConsumerHealth {
                assigned: stats.assigned.load(std::sync::atomic::Ordering::Acquire),
                stalled_partitions: stats
                    .stalled_partitions
                    .load(std::sync::atomic::Ordering::Relaxed),
            });
            let reader = AttemptReader::new(&api_config, &bootstrap)?;
            let state = ApiState::new(&api_config, Arc::clone(&store), tokens, consuming)?
                .with_attempt_reader(reader);
            Some(ApiServer::start(&api_config.api.listen, state).await?)
        };
        // Reading the configuration and the endpoint store took memory
        // that is free now (a few hundred MiB for 100 000 endpoints in the
        // file): give it back rather than keep it resident.
        crate::allocator::release_freed_memory();
        Ok(Self {
            pipeline,
            store,
            devices,
            api,
            broker: target,
        })
    }

    /// Where the API listens (`None` when disabled).
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().map(ApiServer::local_addr)
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// The endpoint store.
    pub fn store(&self) -> &Arc<EndpointStore> {
        &self.store
    }

    /// Stops the API, drains and commits the pipeline, stops following
    /// the stores (their clients closed before an embedded broker stops).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        if let Some(api) = self.api {
            api.stop().await;
        }
        let result = self.pipeline.shutdown().await;
        if let Some(devices) = self.devices {
            devices.close().await;
        }
        self.store.stop_following().await;
        drop(self.store);
        drop(self.broker);
        result
    }
}

/// Holds SIGTERM and SIGINT pending on the calling thread and the threads
/// it starts, from the very start of `hookstream run` until [`run`] has
/// installed its handlers: a signal that arrives meanwhile (a service
/// manager stopping an instance it just started) is then answered like
/// any other, instead of killing the process by the default action.
pub fn hold_stop_signals() {
    set_stop_signals(libc::SIG_BLOCK);
}

fn set_stop_signals(how: libc::c_int) {
    // SAFETY: sigemptyset/sigaddset initialise a local set;
    // pthread_sigmask changes the calling thread's mask only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Runs start-up `step`, logging what it waits for (`what`, from the
/// cluster at `bootstrap`) once it has taken a second, and every 15 s after
/// that: a cluster that does not answer holds a step until librdkafka's
/// timeouts, which would otherwise be a minute of silence.
async fn waiting_for<T>(bootstrap: &str, what: &str, step: impl Future<Output = T>) -> T {
    let started = tokio::time::Instant::now();
    let mut log_at = started + Duration::from_secs(1);
    tokio::pin!(step);
    loop {
        tokio::select! {
            done = &mut step => return done,
            _ = tokio::time::sleep_until(log_at) => {
                tracing::info!(
                    waited_s = started.elapsed().as_secs(),
                    "waiting for the Kafka cluster at {bootstrap} ({what})"
                );
                log_at += Duration::from_secs(15);
            }
        }
    }
}

/// Raises the open-files limit to the hard limit and logs it, warning when
/// the API's connections could take more than half of it.
fn log_open_files_limit(config: &Config) {
    let api_connections = if config.api.listen.is_empty() {
        0
    } else {
        config.api.max_connections as libc::rlim_t
    };
    match super::open_files::raise_to_hard_limit() {
        Ok(limit) => {
            tracing::info!(
                limit = %limit,
                api_max_connections = api_connections,
                delivery_max_connections_per_host = config.delivery.max_connections_per_host,
                "open files limit"
            );
            if api_connections.saturating_mul(2) > limit.soft {
                tracing::warn!(
                    limit = limit.soft,
                    api_max_connections = api_connections,
                    "api.max_connections could take more than half the open files limit: \
                     deliveries and Kafka need descriptors too (see Sizing in the README)"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not raise the open files limit"),
    }
}

/// Runs the service of `config` until a termination signal, then drains
/// in-flight work, commits final offsets and returns. A signal during
/// start-up stops it at once (start-up runs as its own task and is
/// abandoned; nothing was consumed yet, so nothing is drained) and returns
/// `Ok`: the service stopped because it was asked to. The open-files limit
/// is raised to the hard limit first.
pub async fn run(config: Config) -> Result<(), CommandError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    // Handlers in place: a signal held since start (see
    // `hold_stop_signals`) is delivered to this thread now.
    set_stop_signals(libc::SIG_UNBLOCK);

    log_open_files_limit(&config);
    let target = if config.kafka.is_embedded() {
        tracing::warn!(
            "kafka.brokers = \"embedded\": using an in-process development broker; it is not durable \
             and keeps only about 5 MiB per partition"
        );
        let broker = EmbeddedBroker::start(1).context("starting the embedded broker")?;
        tracing::info!(bootstrap = %broker.bootstrap_servers(), "embedded broker listening");
        BrokerTarget::Embedded(Arc::new(broker))
    } else {
        BrokerTarget::External(config.kafka.brokers.clone())
    };
    if !config.metrics.listen.is_empty() {
        crate::metrics::install(&config.metrics)?;
        tracing::info!(listen = %config.metrics.listen, "metrics at /metrics");
    }
    let bootstrap = target.bootstrap().to_string();
    let mut starting = tokio::spawn(Service::start(config, target));
    let service = tokio::select! {
        started = &mut starting => started
            .map_err(|e| CommandError::Runtime(anyhow::anyhow!("start-up panicked: {e}")))??,
        name = signalled(&mut term, &mut int) => {
            starting.abort();
            tracing::info!(
                bootstrap = %bootstrap,
                "{name} received during start-up: stopping without starting"
            );
            return Ok(());
        }
    };
    tokio::select! {
        _ = int.recv() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = service.pipeline().stopped() => tracing::error!("pipeline stopped by itself"),
    }
    service.shutdown().await?;
    Ok(())
}

/// The name of the first of SIGTERM and SIGINT to arrive.
async fn signalled(
    term: &mut tokio::signal::unix::Signal,
    int: &mut tokio::signal::unix::Signal,
) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
