//! The management API of SPEC §6: endpoints over JSON/HTTP with bearer
//! tokens, the Mainflux-compatible routes, health, readiness and the
//! OpenAPI document.
//!
//! Owns HTTP only: reads requests ([`extract`]), checks tokens ([`auth`]),
//! validates ([`validate`]) and writes through the
//! [`EndpointStore`](crate::index::EndpointStore), which owns persistence
//! and the live registry. [`routes`] is the one table the router and the
//! OpenAPI document ([`openapi`]) are built from.

pub mod auth;
pub mod errors;
mod extract;
mod handlers;
mod mainflux;
pub mod openapi;
pub mod routes;
pub mod secrets;
pub mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use axum::routing::MethodRouter;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::deliver::client::HttpClients;
use crate::index::EndpointStore;
use auth::{Guard, Tokens};
use errors::ApiError;

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
}

impl ApiSettings {
    /// The settings of `config`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            allow_private: config.delivery.allow_private_destinations,
            default_timeout: config.delivery.timeout.get(),
            rotation_grace: config.api.rotation_grace.get(),
            retry_after_cap: config.delivery.backoff.max.get(),
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
        let clients = HttpClients::new(
            &config.delivery.user_agent,
            config.delivery.allow_private_destinations,
        )
        .context("building the HTTP client of the test route")?;
        Ok(Self {
            store,
            tokens: Arc::new(tokens),
            settings: ApiSettings::from_config(config),
            clients,
            consuming,
            openapi: Arc::new(openapi::document(&routes::table())),
        })
    }
}

/// The router of every route in [`routes::table`].
pub fn router(state: Arc<ApiState>) -> Router {
    let mut by_path: BTreeMap<&'static str, MethodRouter<Arc<ApiState>>> = BTreeMap::new();
    for route in routes::table() {
        let guard = Guard {
            tokens: Arc::clone(&state.tokens),
            access: route.access,
        };
        let handler = route
            .handler
            .route_layer(axum::middleware::from_fn_with_state(guard, auth::guard));
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
        .with_state(state)
}

/// A running API server.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ApiServer {
    /// Listens on `listen` (`api.listen`) and serves `state`.
    pub async fn start(listen: &str, state: ApiState) -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("api.listen: cannot listen on {listen}"))?;
        let addr = listener
            .local_addr()
            .context("reading the API's listen address")?;
        let app = router(Arc::new(state));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "the management API stopped");
            }
        });
        tracing::info!(listen = %addr, "management API listening (OpenAPI at /v1/openapi.json)");
        Ok(Self {
            addr,
            stop: Some(stop),
            task,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in progress finish (up to 5 s).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}
