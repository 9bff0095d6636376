//! The `/metrics` listener and what it answers: the `metrics` recorder's
//! families (pipeline, topic and latency metrics), then the families
//! hookstream renders itself (per-endpoint series, consumer lag, process
//! metrics, build info). No family appears in both.
//!
//! Owns the process's one recorder and endpoint series table; installed
//! once per process.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::header::CONTENT_TYPE;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::endpoint::EndpointSeriesTable;

/// What an installed exporter keeps.
#[derive(Debug)]
pub(super) struct Exposition {
    pub(super) recorder: PrometheusHandle,
    pub(super) endpoints: EndpointSeriesTable,
}

static INSTALLED: OnceLock<Arc<Exposition>> = OnceLock::new();

/// The installed exposition, if any.
pub(super) fn installed() -> Option<&'static Arc<Exposition>> {
    INSTALLED.get()
}

/// The text `/metrics` answers now (`None` before [`install`]).
pub fn render() -> Option<String> {
    installed().map(|e| e.render())
}

impl Exposition {
    fn render(&self) -> String {
        let mut out = self.recorder.render();
        self.endpoints.render(&mut out);
        super::consumer_lag::render(&mut out);
        super::process::render(&mut out);
        super::process::render_build_info(&mut out);
        out
    }
}

/// Installs the global recorder, with `max_endpoint_series` endpoints
/// getting series of their own, and serves the exposition on `listen`
/// (every path; `/metrics` by convention). Returns the bound address
/// (`listen` may ask for port 0).
pub fn install(listen: &str, max_endpoint_series: usize) -> Result<SocketAddr> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("metrics.listen `{listen}` is not an address"))?;
    if INSTALLED.get().is_some() {
        anyhow::bail!("the metrics exporter is installed already");
    }
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("starting the metrics listener on {listen}"))?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &super::SECONDS_BUCKETS)
        .context("configuring histogram buckets")?
        .build_recorder();
    let exposition = Arc::new(Exposition {
        recorder: recorder.handle(),
        endpoints: EndpointSeriesTable::new(max_endpoint_series),
    });
    metrics::set_global_recorder(recorder).context("installing the metrics recorder")?;
    if INSTALLED.set(Arc::clone(&exposition)).is_err() {
        anyhow::bail!("the metrics exporter is installed already");
    }
    let serve = serve(listener, exposition);
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(serve);
        }
        Err(_) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the metrics listener's runtime")?;
            std::thread::Builder::new()
                .name("metrics-listener".into())
                .spawn(move || runtime.block_on(serve))
                .context("starting the metrics listener's thread")?;
        }
    }
    super::describe();
    Ok(bound)
}

/// Serves scrapes, and drains histogram samples into their buckets every
/// 5 s so that memory stays bounded between scrapes.
async fn serve(listener: std::net::TcpListener, exposition: Arc<Exposition>) {
    let upkeep = exposition.recorder.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the metrics listener cannot serve");
            return;
        }
    };
    let app = axum::Router::new().fallback(move || {
        let exposition = Arc::clone(&exposition);
        async move {
            let text = tokio::task::spawn_blocking(move || exposition.render())
                .await
                .unwrap_or_default();
            (
                [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
                text,
            )
        }
    });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics listener stopped");
    }
}
