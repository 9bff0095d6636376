//! `hookstream run`: the service, until SIGTERM or SIGINT.

use std::sync::Arc;

use anyhow::Context;

use super::CommandError;
use crate::config::Config;
use crate::kafka::EmbeddedBroker;
use crate::pipeline::{BrokerTarget, Pipeline};

/// Runs the pipeline of `config` until a termination signal, then drains
/// in-flight work, commits final offsets and returns.
pub async fn run(config: Config) -> Result<(), CommandError> {
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
        crate::metrics::install_exporter(&config.metrics.listen)?;
        tracing::info!(listen = %config.metrics.listen, "metrics at /metrics");
    }
    let pipeline = Pipeline::start(config, target).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = wait_finished(&pipeline) => tracing::error!("pipeline stopped by itself"),
    }
    pipeline.shutdown().await?;
    Ok(())
}

async fn wait_finished(pipeline: &Pipeline) {
    while !pipeline.is_finished() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
