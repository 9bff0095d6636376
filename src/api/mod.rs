//! The management API of SPEC §6: endpoints over JSON/HTTP with bearer
//! tokens, the Mainflux-compatible routes, health, readiness and the
//! OpenAPI document.
//!
//! Owns HTTP only: holds connections within limits ([`server`]), reads
//! bodies within limits ([`body`]), reads requests ([`extract`]), checks
//! tokens ([`auth`]), validates ([`validate`]) and writes through the
//! [`EndpointStore`](crate::index::EndpointStore), which owns persistence
//! and the live registry. [`routes`] is the one table the router and the
//! OpenAPI document ([`openapi`]) are built from.

mod activity;
pub mod auth;
pub mod body;
pub mod errors;
mod extract;
mod handlers;
mod mainflux;
mod mender;
pub mod openapi;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::MethodRouter;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::deliver::client::HttpClients;
use crate::index::EndpointStore;
use crate::index::attempt_reader::AttemptReader;
use auth::{Guard, Tokens};
use body::BodyLimits;
use errors::ApiError;
use server::ConnectionLimits;

/// Settings the handlers need from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct ApiSettings {
    /// `delivery.allow_private_destinations`.
    pub allow_private: bool,
    /// `delivery.timeout`.
    pub default_timeout: Duration,
    /// `api.rotation_grace`.
    pub rotation_grace: Duration,
    /// `delivery.backoff.max` (caps `Retry-After` in test sends).
    pub retry_after_cap: Duration,
    /// `api.max_connections`, `api.header_timeout`, `api.idle_timeout`.
    pub connections: ConnectionLimits,
    /// `api.max_body_bytes`, `api.body_timeout`.
    pub body: BodyLimits,
}

impl ApiSettings {
    /// The settings of `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            allow_private: config.delivery.allow_private_destinations,
            default_timeout: config.delivery.timeout.get(),
            rotation_grace: config.api.rotation_grace.get(),
            retry_after_cap: config.delivery.backoff.max.get(),
            connections: ConnectionLimits {
                max_connections: config.api.max_connections,
                header_timeout: config.api.header_timeout.get(),
                idle_timeout: config.api.idle_timeout.get(),
            },
            body: BodyLimits {
                max_bytes: config.api.max_body_bytes,
                timeout: config.api.body_timeout.get(),
            },
        }
    }
}

/// How the pipeline's consumer is doing, as readiness reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerHealth {
    /// It joined its group and got an assignment.
    pub assigned: bool,
    /// Assigned partitions that should be fetching and are not.
    pub stalled_partitions: u64,
}

/// Reads the pipeline's [`ConsumerHealth`].
pub type Consuming = Arc<dyn Fn() -> ConsumerHealth + Send + Sync>;

/// What the handlers share.
pub struct ApiState {
    store: Arc<EndpointStore>,
    tokens: Arc<Tokens>,
    settings: ApiSettings,
    clients: HttpClients,
    consuming: Consuming,
    openapi: Arc<serde_json::Value>,
    /// The event types the configured sources produce.
    event_types: Arc<Vec<crate::source::types::SourceTypes>>,
    /// Reads the durable activity log (`None`: attempts come from this
    /// instance's memory only).
    attempts: Option<Arc<AttemptReader>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("tokens", &self.tokens)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// The state of an API over `store` for `config`.
    pub fn new(
        config: &Config,
        store: Arc<EndpointStore>,
        tokens: Tokens,
        consuming: Consuming,
    ) -> Result<Self> {
        let clients = HttpClients::new(&config.delivery)
            .context("building the HTTP client of the test route")?;
        Ok(Self {
            store,
            tokens: Arc::new(tokens),
            settings: ApiSettings::from_config(config),
            clients,
            consuming,
            openapi: Arc::new(openapi::document(&routes::table())),
            event_types: Arc::new(crate::source::types::of_config(config)),
            attempts: None,
        })
    }

    /// Answers `attempts` from the durable activity log read by `reader`.
    pub fn with_attempt_reader(mut self, reader: Option<Arc<AttemptReader>>) -> Self {
        self.attempts = reader;
        self
    }
}

/// The router of every route in [`routes::table`]: the token check first,
/// then (for routes that take one) the body within its limits, then the
/// handler.
pub fn router(state: Arc<ApiState>) -> Router {
    let limits = state.settings.body;
    let mut by_path: BTreeMap<&'static str, MethodRouter<Arc<ApiState>>> = BTreeMap::new();
    for route in routes::table() {
        let guard = Guard {
            tokens: Arc::clone(&state.tokens),
            access: route.access,
        };
        let handler = if route.body.is_some() {
            route
                .handler
                .route_layer(axum::middleware::from_fn_with_state(
                    limits,
                    body::read_whole,
                ))
        } else {
            route.handler
        };
        let handler = handler.route_layer(axum::middleware::from_fn_with_state(guard, auth::guard));
        let merged = match by_path.remove(route.path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        by_path.insert(route.path, merged);
    }
    let mut router = Router::new();
    for (path, methods) in by_path {
        router = router.route(
            path,
            methods.fallback(|| async { ApiError::method_not_allowed() }),
        );
    }
    router
        .fallback(|| async { ApiError::no_route() })
        // Bodies were read within `limits` already; the extractor's own
        // limit (2 MB by default) must not be the smaller one.
        .layer(DefaultBodyLimit::max(limits.max_bytes))
        .with_state(state)
}

/// A running API server.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ApiServer {
    /// Listens on `listen` (`api.listen`) and serves `state` within its
    /// connection limits ([`server`]).
    pub async fn start(listen: &str, state: ApiState) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("api.listen: cannot listen on {listen}"))?;
        let addr = listener
            .local_addr()
            .context("reading the API's listen address")?;
        let limits = state.settings.connections;
        let app = router(Arc::new(state));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(server::serve(listener, app, limits, stopped));
        tracing::info!(
            listen = %addr,
            max_connections = limits.max_connections,
            header_timeout = ?limits.header_timeout,
            idle_timeout = ?limits.idle_timeout,
            "management API listening (OpenAPI at /v1/openapi.json)"
        );
        Ok(Self { addr, stop, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes idle connections, lets requests in progress
    /// finish (up to 5 s; then every connection is closed).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}
