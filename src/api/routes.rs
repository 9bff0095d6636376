//! The route table: every route of the API once, with its method, path,
//! access and documentation. The router ([`super::router`]) and the
//! OpenAPI document ([`super::openapi`]) are both built from it, so the
//! document cannot miss a route.

use std::sync::Arc;

use axum::handler::Handler;
use axum::routing::{MethodFilter, MethodRouter, on};

use super::ApiState;
use super::auth::Access;
use super::errors::ErrorBody;
use super::openapi::{EndpointPatch, OneOrList, OpenApiDocument, SchemaFn, of};
use super::{activity, handlers as v1, mainflux, mender};
use crate::config::EndpointConfig;

/// A query parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Name.
    pub name: &'static str,
    /// JSON schema type (`string`, `integer`).
    pub kind: &'static str,
    /// What it does.
    pub description: &'static str,
    /// The values it takes, when it is an enumeration (else empty).
    pub values: &'static [&'static str],
}

/// A documented response.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// What it means.
    pub description: &'static str,
    /// The Rust type of the body (`None`: no body).
    pub schema: Option<SchemaFn>,
}

/// One route.
pub struct Route {
    /// HTTP method (upper case).
    pub method: &'static str,
    /// Path, with `{name}` parameters.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// `operationId`.
    pub operation: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Query parameters.
    pub query: &'static [Param],
    /// The Rust type the request body is read as, if it takes one.
    pub body: Option<SchemaFn>,
    /// Success answers (errors are added from `access`, `body` and path
    /// parameters).
    pub answers: Vec<Answer>,
    /// The handler.
    pub handler: MethodRouter<Arc<ApiState>>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

fn route<H, T>(
    method: &'static str,
    path: &'static str,
    access: Access,
    operation: &'static str,
    summary: &'static str,
    handler: H,
) -> Route
where
    H: Handler<T, Arc<ApiState>>,
    T: 'static,
{
    let filter = match method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "PATCH" => MethodFilter::PATCH,
        _ => MethodFilter::DELETE,
    };
    Route {
        method,
        path,
        access,
        operation,
        summary,
        query: &[],
        body: None,
        answers: Vec::new(),
        handler: on(filter, handler),
    }
}

impl Route {
    fn query(mut self, query: &'static [Param]) -> Self {
        self.query = query;
        self
    }
    fn body(mut self, schema: SchemaFn) -> Self {
        self.body = Some(schema);
        self
    }
    fn answers(mut self, answers: &[Answer]) -> Self {
        self.answers = answers.to_vec();
        self
    }
}

const fn answer(status: u16, description: &'static str, schema: SchemaFn) -> Answer {
    Answer {
        status,
        description,
        schema: Some(schema),
    }
}

const NO_CONTENT: Answer = Answer {
    status: 204,
    description: "Deleted.",
    schema: None,
};

const LIST_FILTERS: &[Param] = &[
    Param {
        name: "device",
        kind: "string",
        description: "Only endpoints restricted to this device (listed in `devices`).",
        values: &[],
    },
    Param {
        name: "group",
        kind: "string",
        description: "Only endpoints restricted to this group (listed in `groups`).",
        values: &[],
    },
    Param {
        name: "tenant",
        kind: "string",
        description: "Only endpoints of this tenant.",
        values: &[],
    },
    Param {
        name: "event",
        kind: "string",
        description: "Only endpoints subscribed to this event type (one of `events` matches it).",
        values: &[],
    },
];

const LIMIT: &[Param] = &[
    Param {
        name: "limit",
        kind: "integer",
        description: "How many attempts, newest first (1-200, default 50).",
        values: &[],
    },
    Param {
        name: "payload",
        kind: "string",
        description: "`true`: each attempt carries the event as consumed (`payload`: its JSON, or its text; null once the source topic's retention removed it).",
        values: &["true", "false"],
    },
];

const REVEAL: &[Param] = &[Param {
    name: "reveal",
    kind: "string",
    description: "`headers`: show the endpoint's header values in the clear (admin tokens only; 403 for viewers). Without it they are masked (`****`).",
    values: &["headers"],
}];

/// Every route of the API.
pub fn table() -> Vec<Route> {
    use Access::{Admin, Public, Viewer};
    vec![
        route("GET", "/healthz", Public, "healthz", "Liveness: the process is up.", v1::healthz)
            .answers(&[answer(200, "Alive.", of::<v1::Health>)]),
        route("GET", "/readyz", Public, "readyz", "Readiness: endpoints loaded from the store and the consumer assigned.", v1::readyz)
            .answers(&[answer(200, "Ready.", of::<v1::Ready>), answer(503, "Not ready yet.", of::<v1::Ready>)]),
        route("GET", "/v1/openapi.json", Public, "openapi", "This document.", v1::openapi)
            .answers(&[answer(200, "The OpenAPI 3 document.", of::<OpenApiDocument>)]),
        route("POST", "/v1/endpoints", Admin, "createEndpoints", "Create one endpoint or an array of them; generated secrets are shown in this answer only.", v1::create)
            .body(of::<OneOrList<EndpointConfig>>)
            .answers(&[answer(201, "Created (an object, or an array for an array).", of::<OneOrList<EndpointConfig>>), answer(409, "An endpoint with this id exists.", of::<ErrorBody>)]),
        route("GET", "/v1/endpoints", Viewer, "listEndpoints", "List endpoints (secrets and header values masked).", v1::list)
            .query(LIST_FILTERS)
            .answers(&[answer(200, "Endpoints, by id.", of::<Vec<EndpointConfig>>)]),
        route("GET", "/v1/endpoints/{id}", Viewer, "getEndpoint", "One endpoint (secret and header values masked; header values in the clear for admins with reveal=headers).", v1::get)
            .query(REVEAL)
            .answers(&[answer(200, "The endpoint.", of::<EndpointConfig>), answer(403, "reveal=headers with a viewer token.", of::<ErrorBody>)]),
        route("PUT", "/v1/endpoints/{id}", Admin, "replaceEndpoint", "Replace an endpoint; a missing or masked secret keeps the current one, and so does a masked header value.", v1::put)
            .body(of::<EndpointConfig>)
            .answers(&[answer(200, "The endpoint as stored.", of::<EndpointConfig>)]),
        route("PATCH", "/v1/endpoints/{id}", Admin, "patchEndpoint", "Change some fields (JSON merge patch, RFC 7396).", v1::patch)
            .body(of::<EndpointPatch>)
            .answers(&[answer(200, "The endpoint as stored.", of::<EndpointConfig>)]),
        route("DELETE", "/v1/endpoints/{id}", Admin, "deleteEndpoint", "Delete an endpoint; its queued deliveries and retries are dead-lettered (endpoint_deleted).", v1::delete)
            .answers(&[NO_CONTENT]),
        route("POST", "/v1/endpoints/{id}/enable", Admin, "enableEndpoint", "Enable an endpoint; the deliveries kept while it was disabled come back at their next recheck (delivery.disabled_backlog.recheck).", v1::enable)
            .answers(&[answer(200, "The endpoint as stored.", of::<EndpointConfig>)]),
        route("POST", "/v1/endpoints/{id}/disable", Admin, "disableEndpoint", "Disable an endpoint; its pending and new deliveries wait on a retry tier until it is enabled again, for up to delivery.disabled_backlog.max_age (then they are dead-lettered as endpoint_disabled).", v1::disable)
            .answers(&[answer(200, "The endpoint as stored.", of::<EndpointConfig>)]),
        route("POST", "/v1/endpoints/{id}/rotate-secret", Admin, "rotateSecret", "New secret; with `standard` the previous one keeps signing beside it for [api].rotation_grace; mender, openmdm and github carry one signature, so the new secret signs alone at once (no overlap).", v1::rotate)
            .answers(&[answer(200, "The new secret (shown this once).", of::<v1::rotate::Rotated>)]),
        route("POST", "/v1/endpoints/{id}/test", Admin, "testEndpoint", "Send a signed hookstream.test event now and return the receiver's answer.", v1::test)
            .answers(&[answer(200, "What the receiver answered.", of::<v1::test_event::TestResult>)]),
        route("GET", "/v1/endpoints/{id}/attempts", Viewer, "endpointAttempts", "Recent delivery attempts, newest first, from the durable activity log (every instance's, across restarts).", activity::attempts)
            .query(LIMIT)
            .answers(&[answer(200, "Attempts.", of::<Vec<activity::AttemptShown>>)]),
        route("GET", "/v1/endpoints/{id}/stats", Viewer, "endpointStats", "Counts by outcome and latency percentiles.", v1::stats)
            .answers(&[answer(200, "Statistics.", of::<v1::EndpointStats>)]),
        route("GET", "/v1/event-types", Viewer, "eventTypes", "Per input topic: its preset and the event types its platform documents.", v1::event_types)
            .answers(&[answer(200, "The sources' event types.", of::<v1::EventTypes>)]),
    ]
    .into_iter()
    .chain(mainflux_routes(false))
    .chain(mainflux_routes(true))
    .chain(mender_routes())
    .collect()
}

const PAGING: &[Param] = &[
    Param {
        name: "page",
        kind: "integer",
        description: "Page number (from 1; page × per_page at most 1000).",
        values: &[],
    },
    Param {
        name: "per_page",
        kind: "integer",
        description: "Results per page (default 20).",
        values: &[],
    },
];

const EVENT_FILTERS: &[Param] = &[
    Param {
        name: "page",
        kind: "integer",
        description: "Page number (from 1; page × per_page at most 1000).",
        values: &[],
    },
    Param {
        name: "per_page",
        kind: "integer",
        description: "Results per page (default 20).",
        values: &[],
    },
    Param {
        name: "integration_id",
        kind: "string",
        description: "Only the events of this integration.",
        values: &[],
    },
    Param {
        name: "omit_data",
        kind: "string",
        description: "`true`: do not read the events again (`data` is null): faster.",
        values: &["true", "false"],
    },
];

/// The Mender iot-manager-compatible routes.
fn mender_routes() -> Vec<Route> {
    use Access::{Admin, Viewer};
    const ALL: &str = "/api/management/v1/iot-manager/integrations";
    const ONE: &str = "/api/management/v1/iot-manager/integrations/{id}";
    vec![
        route("GET", ALL, Viewer, "menderListIntegrations", "Mender: webhook integrations (endpoints with a scope).", mender::list)
            .query(PAGING)
            .answers(&[answer(200, "Integrations, by id.", of::<Vec<mender::Integration>>)]),
        route("POST", ALL, Admin, "menderCreateIntegration", "Mender: register a webhook integration; 201 with Location, no body.", mender::create)
            .body(of::<mender::IntegrationInput>)
            .answers(&[Answer { status: 201, description: "Registered (Location names it).", schema: None }, answer(409, "An integration with this id exists.", of::<ErrorBody>)]),
        route("GET", ONE, Viewer, "menderGetIntegration", "Mender: one integration.", mender::get)
            .answers(&[answer(200, "The integration.", of::<mender::Integration>)]),
        route("DELETE", ONE, Admin, "menderDeleteIntegration", "Mender: remove an integration.", mender::delete)
            .answers(&[NO_CONTENT]),
        route("PUT", "/api/management/v1/iot-manager/integrations/{id}/credentials", Admin, "menderSetCredentials", "Mender: replace an integration's URL and secret.", mender::set_credentials_route)
            .body(of::<mender::Credentials>)
            .answers(&[Answer { status: 204, description: "Updated.", schema: None }]),
        route("GET", "/api/management/v1/iot-manager/events", Viewer, "menderListEvents", "Mender: recent events with their delivery status per integration (the Activity view), from the durable activity log.", mender::events)
            .query(EVENT_FILTERS)
            .answers(&[answer(200, "Events, newest first.", of::<Vec<mender::Event>>), answer(404, "No integration with this integration_id.", of::<ErrorBody>)]),
    ]
}

/// The Mainflux-compatible routes, bare or under the gateway prefix
/// `/svcwebhooks` (`gateway`).
fn mainflux_routes(gateway: bool) -> Vec<Route> {
    use Access::{Admin, Viewer};
    let (things, groups, one, all) = if gateway {
        (
            "/svcwebhooks/things/{thing_id}/webhooks",
            "/svcwebhooks/groups/{group_id}/webhooks",
            "/svcwebhooks/webhooks/{id}",
            "/svcwebhooks/webhooks",
        )
    } else {
        (
            "/things/{thing_id}/webhooks",
            "/groups/{group_id}/webhooks",
            "/webhooks/{id}",
            "/webhooks",
        )
    };
    let op =
        |name: &'static str, gateway_name: &'static str| if gateway { gateway_name } else { name };
    vec![
        route("POST", things, Admin, op("mainfluxCreateWebhooks", "svcwebhooksCreateWebhooks"), "Mainflux: create webhooks of a thing (a bare array).", mainflux::create)
            .body(of::<mainflux::WebhooksCreate>)
            .answers(&[answer(201, "Created (a bare array).", of::<Vec<mainflux::Webhook>>), answer(409, "A webhook with this id exists.", of::<ErrorBody>)]),
        route("GET", things, Viewer, op("mainfluxListThingWebhooks", "svcwebhooksListThingWebhooks"), "Mainflux: webhooks of a thing.", mainflux::list_by_thing)
            .answers(&[answer(200, "Webhooks (a bare array).", of::<Vec<mainflux::Webhook>>)]),
        route("GET", groups, Viewer, op("mainfluxListGroupWebhooks", "svcwebhooksListGroupWebhooks"), "Mainflux: webhooks of a group's known things, and endpoints restricted to the group.", mainflux::list_by_group)
            .answers(&[answer(200, "Webhooks (a bare array).", of::<Vec<mainflux::Webhook>>)]),
        route("GET", one, Viewer, op("mainfluxGetWebhook", "svcwebhooksGetWebhook"), "Mainflux: one webhook.", mainflux::get)
            .answers(&[answer(200, "The webhook.", of::<mainflux::Webhook>)]),
        route("PUT", one, Admin, op("mainfluxUpdateWebhook", "svcwebhooksUpdateWebhook"), "Mainflux: change a webhook's name, URL, headers and metadata (what GET answered can be sent back).", mainflux::update)
            .body(of::<mainflux::WebhookInput>)
            .answers(&[answer(200, "The webhook as stored.", of::<mainflux::Webhook>)]),
        route("DELETE", all, Admin, op("mainfluxRemoveWebhooks", "svcwebhooksRemoveWebhooks"), "Mainflux: delete webhooks by id (all or none).", mainflux::remove)
            .body(of::<mainflux::RemoveRequest>)
            .answers(&[NO_CONTENT, answer(404, "A webhook id is unknown: nothing was deleted.", of::<ErrorBody>)]),
    ]
}
