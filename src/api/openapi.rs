//! The OpenAPI 3 document of the API, generated from the route table
//! ([`super::routes::table`]) and the schemas below, which describe the
//! JSON the handlers read and write.

use serde_json::{Map, Value, json};

use super::auth::Access;
use super::routes::Route;

/// The document for `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut paths = Map::new();
    for route in routes {
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(route.method.to_ascii_lowercase(), operation(route));
        }
    }
    link_created_ids(&mut paths);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "hookstream management API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Endpoints of the hookstream webhook delivery engine: the [[endpoints]] table of the configuration file, in JSON. Writes are stored on the compacted <prefix>.endpoints topic and answered once this instance applied them; every instance follows the topic. Secrets are shown only when created or rotated; header values are masked except for admins who ask with ?reveal=headers on GET /v1/endpoints/{id}. Connections and bodies are bounded by [api] max_connections, header_timeout, idle_timeout, body_timeout and max_body_bytes.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
    })
}

/// OpenAPI links from the create answers to the operations taking the
/// created id (clients and fuzzers follow them).
fn link_created_ids(paths: &mut Map<String, Value>) {
    let mut v1 = Map::new();
    let mut mainflux = Map::new();
    for (path, methods) in paths.iter() {
        let Some(methods) = methods.as_object() else {
            continue;
        };
        for op in methods.values() {
            let Some(id) = op["operationId"].as_str() else {
                continue;
            };
            if path.starts_with("/v1/endpoints/{id}") {
                v1.insert(
                    id.to_string(),
                    json!({"operationId": id, "parameters": {"id": "$response.body#/id"}}),
                );
            } else if path == "/webhooks/{id}" {
                mainflux.insert(
                    id.to_string(),
                    json!({"operationId": id, "parameters": {"id": "$response.body#/webhooks/0/id"}}),
                );
            }
        }
    }
    for (path, method, links) in [
        ("/v1/endpoints", "post", v1),
        ("/things/{thing_id}/webhooks", "post", mainflux),
    ] {
        if let Some(created) = paths
            .get_mut(path)
            .and_then(|p| p.get_mut(method))
            .and_then(|op| op["responses"].get_mut("201"))
        {
            created["links"] = Value::Object(links);
        }
    }
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    })
}

/// The OpenAPI operation of one route of the route table: parameters,
/// request body, responses.
///
/// Long on purpose: one short block per part of an operation, read whole.
fn operation(route: &Route) -> Value {
    let mut parameters = Vec::new();
    let mut rest = route.path;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 1..start + len];
        parameters.push(json!({
            "name": name, "in": "path", "required": true, "schema": {"type": "string"},
        }));
        rest = &rest[start + len..];
    }
    for p in route.query {
        let schema = if p.kind == "integer" {
            json!({"type": "integer", "minimum": 1, "maximum": 200})
        } else if !p.values.is_empty() {
            json!({"type": p.kind, "enum": p.values})
        } else {
            json!({"type": p.kind})
        };
        parameters.push(json!({
            "name": p.name, "in": "query", "required": false,
            "description": p.description, "schema": schema,
        }));
    }
    let mut responses = Map::new();
    for a in &route.answers {
        let mut r = json!({"description": a.description});
        if let Some(schema) = a.schema {
            r["content"] = json!({"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}});
        }
        responses.insert(a.status.to_string(), r);
    }
    let has_path_params = route.path.contains('{');
    if route.body.is_some() || !route.query.is_empty() || has_path_params {
        responses.insert(
            "400".into(),
            error("Invalid input; `field` names what is wrong."),
        );
    }
    if route.body.is_some() {
        responses.insert(
            "408".into(),
            error("The body did not arrive within [api].body_timeout; `field` is `body`."),
        );
        responses.insert(
            "413".into(),
            error("The body is larger than [api].max_body_bytes; `field` is `body`."),
        );
    }
    if route.access != Access::Public {
        responses.insert("401".into(), error("Missing or invalid bearer token."));
    }
    if route.access == Access::Admin {
        responses.insert(
            "403".into(),
            error("The token may only read (role viewer)."),
        );
        if route.method != "GET" {
            responses.insert(
                "503".into(),
                error("The endpoint store could not take the write."),
            );
        }
    }
    if has_path_params && !route.path.starts_with("/things/") && !route.path.starts_with("/groups/")
    {
        responses.insert("404".into(), error("No endpoint with this id."));
    }
    if route.path == "/webhooks" {
        responses.insert(
            "404".into(),
            error("One of the ids is unknown (nothing was deleted)."),
        );
    }
    let mut op = json!({
        "operationId": route.operation,
        "summary": route.summary,
        "parameters": parameters,
        "responses": responses,
    });
    if let Some(body) = route.body {
        op["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}},
        });
    }
    if route.access != Access::Public {
        op["security"] = json!([{"bearer": []}]);
    }
    op
}

/// Properties of an endpoint, as written (`input`) or read.
///
/// Long on purpose: JSON Schema as data, one property per entry, in the
/// order of `EndpointConfig`.
fn endpoint_properties(input: bool) -> Value {
    use crate::config::limits::*;
    let names = json!({
        "type": "array",
        "items": {"type": "string", "minLength": ROUTE_NAME_LEN.min, "maxLength": ROUTE_NAME_LEN.max},
        "maxItems": RESTRICTIONS.max,
    });
    let count = |r: Range<u32>| json!({"type": "integer", "minimum": r.min, "maximum": r.max});
    let mut p = json!({
        "id": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$", "description": "Unique id (generated when left out on create)."},
        "name": {"type": "string", "maxLength": 254, "description": "Display name."},
        "url": {"type": "string", "minLength": URL_LEN.min, "maxLength": URL_LEN.max, "description": "Absolute https URL (http only with allow_http)."},
        "events": {
            "type": "array",
            "items": {"type": "string", "minLength": ROUTE_NAME_LEN.min, "maxLength": ROUTE_NAME_LEN.max},
            "minItems": EVENT_PATTERNS.min,
            "maxItems": EVENT_PATTERNS.max,
            "description": "Exact types, prefix globs (\"device-*\") or \"*\".",
        },
        "devices": names.clone(),
        "groups": names,
        "tenant": {"type": "string", "maxLength": ROUTE_NAME_LEN.max},
        "enabled": {"type": "boolean"},
        "disabled": {
            "type": "object",
            "properties": {
                "reason": {"type": "string"},
                "at": {"type": "string", "description": "RFC 3339."},
                "cause": {"type": "string", "enum": ["gone", "failing"], "description": "gone: it answered 410 Gone (its deliveries are dead-lettered as endpoint_disabled, no event is matched to it); failing: it failed every attempt for delivery.auto_disable.after (its deliveries are kept on a retry tier). Absent means gone."},
            },
            "required": ["reason", "at"],
            "additionalProperties": false,
            "description": "Why and when hookstream disabled the endpoint by itself (it answered 410 Gone, or failed every attempt for delivery.auto_disable.after); cleared when enabled again.",
        },
        "secret": {"type": "string", "maxLength": SECRET_LEN.max, "description": if input { "Signing secret; generated when left out (and shown in the answer); a masked value keeps the current one." } else { "Masked (\"whsec_****\"); shown in the clear only when created or rotated." }},
        "secret_env": {"type": "string", "description": "Environment variable holding the secret (configuration file only; the API keeps but never sets it)."},
        "previous_secret": {"type": "string", "description": "Masked; the secret a rotation replaced, signing until previous_secret_expires_at."},
        "previous_secret_expires_at": {"type": "string", "description": "RFC 3339."},
        "signature": {"type": "string", "enum": ["standard", "mender", "openmdm", "github", "none"]},
        "headers": {
            "type": "object",
            "additionalProperties": {"type": "string", "maxLength": HEADER_VALUE_LEN.max},
            "maxProperties": HEADERS.max,
            "description": if input { "Extra request headers (API keys go here). A masked value (\"****\") keeps the stored value of that header." } else { "Extra request headers; values masked (\"****\") except for admins with ?reveal=headers on GET /v1/endpoints/{id}." },
        },
        "rate_limit": {
            "type": "object",
            "properties": {
                "per_second": {"type": "number", "minimum": RATE_PER_SECOND.min, "maximum": RATE_PER_SECOND.max},
                "burst": count(RATE_BURST),
            },
            "required": ["per_second"],
            "additionalProperties": false,
        },
        "max_concurrency": count(MAX_CONCURRENCY),
        "adaptive_concurrency": {
            "type": "object",
            "properties": {
                "initial": count(ADAPTIVE_INITIAL),
                "decrease_ratio": {"type": "number", "minimum": ADAPTIVE_DECREASE_RATIO.min, "maximum": ADAPTIVE_DECREASE_RATIO.max},
                "ewma_alpha": {"type": "number", "minimum": ADAPTIVE_EWMA_ALPHA.min, "maximum": ADAPTIVE_EWMA_ALPHA.max},
                "rtt_deviation_scale": {"type": "number", "minimum": ADAPTIVE_RTT_DEVIATION_SCALE.min, "maximum": ADAPTIVE_RTT_DEVIATION_SCALE.max},
            },
            "additionalProperties": false,
            "description": "Requests in flight adapt (AIMD on latency and 429/502/503/504/timeouts/connection failures) between 1 and max_concurrency; every key has a default ({} turns it on); initial may not exceed max_concurrency. Left out: a fixed limit of max_concurrency.",
        },
        "batch": {
            "type": "object",
            "properties": {"max_events": count(BATCH_EVENTS), "max_wait": {"type": "string", "description": "Duration, 0ms..=1m."}},
            "additionalProperties": false,
        },
        "timeout": {"type": "string", "description": "Duration with a unit: \"250ms\", \"30s\" (1ms..=1h)."},
        "allow_http": {"type": "boolean"},
        "http_version": {"type": "string", "enum": ["auto", "http1", "http2"]},
        "queue_size": count(QUEUE_SIZE),
        "filter": {
            "type": "object",
            "description": "Payload filter: `body` (dotted paths into the event) and/or `headers` (Kafka record headers), each a table of field = value or { $eq, $neq, $in, $nin, $gt, $gte, $lt, $lte, $exists, $regex }, with $and/$or arrays; at most 64 clauses. A filter that does not compile is a 400 naming its key (filter.body.data.model.$regex).",
            "properties": {"body": {"type": "object"}, "headers": {"type": "object"}},
            "additionalProperties": false,
        },
        "payload": {
            "oneOf": [
                {"type": "string", "enum": ["raw", "standard_webhooks", "cloudevents_binary", "cloudevents_structured"]},
                {
                    "type": "object",
                    "properties": {
                        "pointer": {"type": "string", "maxLength": POINTER_LEN.max, "description": "RFC 6901 pointer into the event (\"\" = the whole event)."},
                        "envelope": {"type": "string", "enum": ["raw", "standard_webhooks", "cloudevents_binary", "cloudevents_structured"]},
                    },
                    "additionalProperties": false,
                },
            ],
            "description": "What the body holds; left out: the event's preset default (Magistrala /payload, CMDB /object, else the whole event).",
        },
        "retry": {
            "type": "object",
            "properties": {
                "policy": {"type": "string", "enum": ["default", "openmdm"]},
                "max_attempts": {"type": "integer", "minimum": MAX_ATTEMPTS.min, "maximum": MAX_ATTEMPTS.max},
                "backoff": {
                    "type": "object",
                    "properties": {
                        "initial": {"type": "string"},
                        "factor": {"type": "number", "minimum": BACKOFF_FACTOR.min, "maximum": BACKOFF_FACTOR.max},
                        "max": {"type": "string"},
                        "jitter": {"type": "number", "minimum": BACKOFF_JITTER.min, "maximum": BACKOFF_JITTER.max},
                    },
                    "additionalProperties": false,
                },
                "retry_on": {"type": "array", "items": {"type": "string"}, "maxItems": RETRY_ON.max, "description": "\"network\", \"4xx\", \"5xx\" or a status 400-599 other than 410."},
                "honor_retry_after": {"type": "boolean"},
            },
            "additionalProperties": false,
            "description": "Retry policy; left out: [delivery]'s.",
        },
        "scope": {"type": "string", "enum": ["deviceauth", "inventory"], "description": "Mender integration scope: only its event types (deviceauth: device-provisioned, device-decommissioned, device-status-changed; inventory: devices-inventory-changed) that events matches."},
        "metadata": {"type": "object", "description": "Key-value pairs for your own use (Mainflux metadata), stored and returned."},
        "auth": auth_schema(input),
        "tls": {
            "type": "object",
            "properties": {
                "client_cert": {"type": "string", "minLength": PEM_LEN.min, "maxLength": PEM_LEN.max, "description": "Client certificate chain (PEM), leaf first; needs client_key."},
                "client_key": secret_property(input, PEM_LEN, "The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1)"),
                "ca": {"type": "string", "minLength": PEM_LEN.min, "maxLength": PEM_LEN.max, "description": "CA certificates (PEM) trusted for this endpoint besides the system's roots."},
            },
            "additionalProperties": false,
            "description": "TLS material of the connection (https URLs only): a client certificate (mTLS) and extra trusted CAs. Each is parsed when saved (400 naming the field).",
        },
        "proxy": {"type": "string", "maxLength": URL_LEN.max, "description": "Egress proxy (http://host:port, no credentials) overriding delivery.proxy, or \"none\" to go direct. The SSRF guard checks the destination behind it."},
    });
    if input {
        p["active"] = json!({"type": "boolean", "description": "Alias of `enabled` (the CMDB's name for it); answers say `enabled`."});
    }
    if !input {
        p["rate_limit"]["required"] = json!(["per_second", "burst"]);
        p["batch"]["required"] = json!(["max_events", "max_wait"]);
        p["adaptive_concurrency"]["required"] = json!([
            "initial",
            "decrease_ratio",
            "ewma_alpha",
            "rtt_deviation_scale"
        ]);
    }
    p
}

/// A secret string of `auth`/`tls`: written in the clear, read masked.
fn secret_property(input: bool, len: crate::config::limits::Range<usize>, what: &str) -> Value {
    let description = if input {
        format!("{what}. A masked value (\"****\") keeps the stored one.")
    } else {
        format!("{what}; masked (\"****\").")
    };
    json!({"type": "string", "minLength": len.min, "maxLength": len.max, "description": description})
}

/// `auth`: exactly one of basic, bearer, oauth2.
fn auth_schema(input: bool) -> Value {
    use crate::config::limits::*;
    let env = json!({"type": "string", "maxLength": ENV_NAME_LEN.max, "description": "Environment variable holding the secret (configuration file only; the API keeps but never sets it)."});
    let name =
        json!({"type": "string", "minLength": AUTH_NAME_LEN.min, "maxLength": AUTH_NAME_LEN.max});
    let param = json!({"type": "string", "minLength": OAUTH_PARAM_LEN.min, "maxLength": OAUTH_PARAM_LEN.max});
    json!({
        "type": "object",
        "properties": {
            "basic": {
                "type": "object",
                "properties": {
                    "username": name.clone(),
                    "password": secret_property(input, SECRET_LEN, "The password"),
                    "password_env": env.clone(),
                },
                "required": ["username"],
                "additionalProperties": false,
                "description": "HTTP Basic (RFC 7617).",
            },
            "bearer": {
                "type": "object",
                "properties": {
                    "token": secret_property(input, BEARER_TOKEN_LEN, "The bearer token (visible ASCII, no spaces)"),
                    "token_env": env.clone(),
                },
                "additionalProperties": false,
                "description": "Authorization: Bearer <token> (RFC 6750).",
            },
            "oauth2": {
                "type": "object",
                "properties": {
                    "token_url": {"type": "string", "minLength": URL_LEN.min, "maxLength": URL_LEN.max, "description": "The token endpoint (https; http as for url). The SSRF guard checks it."},
                    "client_id": name,
                    "client_secret": secret_property(input, SECRET_LEN, "The client secret"),
                    "client_secret_env": env,
                    "scope": param.clone(),
                    "audience": param,
                    "client_auth": {"type": "string", "enum": ["basic", "post"], "description": "client_secret_basic (default) or client_secret_post."},
                },
                "required": ["token_url", "client_id"],
                "additionalProperties": false,
                "description": "OAuth2 client credentials: a token fetched with a form POST, cached until it expires, fetched again after a 401 (once per attempt).",
            },
        },
        "additionalProperties": false,
        "minProperties": 1,
        "maxProperties": 1,
        "description": "Credentials for the receiver: exactly one of basic, bearer, oauth2.",
    })
}

/// The document's component schemas.
///
/// Long on purpose: JSON Schema as data, one schema after another.
fn schemas() -> Value {
    let endpoint_required = [
        "id",
        "url",
        "events",
        "devices",
        "groups",
        "tenant",
        "enabled",
        "signature",
        "headers",
        "max_concurrency",
        "batch",
        "allow_http",
        "http_version",
        "queue_size",
    ];
    let input = json!({
        "type": "object",
        "properties": endpoint_properties(true),
        "required": ["url"],
        "additionalProperties": false,
        "example": {
            "id": "analytics",
            "url": "https://analytics.example.com/mdm/events",
            "events": ["device-provisioned", "device-*"],
            "signature": "standard",
        },
    });
    let nullable_number = json!({"type": "number", "nullable": true});
    let count = json!({"type": "integer", "minimum": 0});
    let webhook_input = json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string", "minLength": 1, "maxLength": 254},
            "url": {"type": "string"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "A masked value (\"****\") keeps the stored value of that header."},
            "metadata": {"type": "object", "description": "Key-value pairs for your own use, stored and returned."},
            "thing_id": {"type": "string", "description": "As a GET answered it; must be the webhook's thing."},
            "group_id": {"type": "string", "description": "As a GET answered it; ignored (the group is the thing's)."},
        },
        "required": ["name", "url"],
        "additionalProperties": false,
        "example": {"name": "fleet events", "url": "https://hooks.example.com/mainflux"},
    });
    json!({
        "Error": {
            "type": "object",
            "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
            "required": ["error"],
        },
        "Health": {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]},
        "Ready": {
            "type": "object",
            "properties": {"ready": {"type": "boolean"}, "endpoints_loaded": {"type": "boolean"}, "consuming": {"type": "boolean"}, "stalled_partitions": {"type": "integer", "minimum": 0}},
            "required": ["ready", "endpoints_loaded", "consuming", "stalled_partitions"],
        },
        "OpenApi": {"type": "object"},
        "Endpoint": {
            "type": "object",
            "properties": endpoint_properties(false),
            "required": endpoint_required,
        },
        "EndpointList": {"type": "array", "items": {"$ref": "#/components/schemas/Endpoint"}},
        "EndpointOrList": {"oneOf": [
            {"$ref": "#/components/schemas/Endpoint"},
            {"$ref": "#/components/schemas/EndpointList"},
        ]},
        "EndpointInput": input,
        "EndpointCreate": {"oneOf": [
            {"$ref": "#/components/schemas/EndpointInput"},
            {"type": "array", "minItems": 1, "maxItems": 1000, "items": {"$ref": "#/components/schemas/EndpointInput"}},
        ]},
        "EndpointReplace": {"$ref": "#/components/schemas/EndpointInput"},
        "EndpointPatch": {
            "type": "object",
            "description": "A JSON merge patch (RFC 7396) of the endpoint: the fields to change; null removes an optional field.",
        },
        "Rotated": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "secret": {"type": "string"},
                "previous_secret_expires_at": {"type": "string", "nullable": true, "description": "Until when the previous secret signs too; null for schemes that carry one signature (no overlap)."},
                "overlap": {"type": "boolean", "description": "Whether requests carry both signatures for a while (standard only)."},
                "note": {"type": "string"},
            },
            "required": ["id", "secret", "previous_secret_expires_at", "overlap", "note"],
        },
        "EventTypes": {
            "type": "object",
            "properties": {"sources": {"type": "array", "items": {
                "type": "object",
                "properties": {
                    "topic": {"type": "string"},
                    "preset": {"type": "string"},
                    "types": {"type": "array", "items": {"type": "string"}},
                    "open": {"type": "boolean", "description": "It may produce types not listed."},
                },
                "required": ["topic", "preset", "types", "open"],
            }}},
            "required": ["sources"],
        },
        "TestResult": {
            "type": "object",
            "properties": {
                "delivered": {"type": "boolean"},
                "status": {"type": "integer", "nullable": true},
                "latency_ms": {"type": "number"},
                "error": {"type": "string"},
                "event_id": {"type": "string"},
                "webhook_id": {"type": "string"},
            },
            "required": ["delivered", "status", "latency_ms", "error", "event_id", "webhook_id"],
        },
        "Attempt": {
            "type": "object",
            "properties": {
                "time_ms": {"type": "integer"},
                "endpoint": {"type": "string"},
                "event_id": {"type": "string"},
                "event_type": {"type": "string"},
                "webhook_id": {"type": "string"},
                "attempt": count,
                "status": {"type": "integer", "nullable": true},
                "outcome": {"type": "string", "enum": ["delivered", "retry_scheduled", "dead_lettered", "deferred"]},
                "reason": {"type": "string", "description": "Why it was dead-lettered; `exhausted` for the last attempt of a delivery out of attempts or retry window."},
                "latency_ms": {"type": "number"},
                "error": {"type": "string"},
                "source": {"type": "string", "description": "Where the event was consumed: topic/partition/offset."},
                "payload": {"description": "The event as consumed (with payload=true; null when no longer retained)."},
            },
            "required": ["time_ms", "event_id", "webhook_id", "attempt", "status", "outcome", "latency_ms", "error"],
        },
        "AttemptList": {"type": "array", "items": {"$ref": "#/components/schemas/Attempt"}},
        "Stats": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "attempts": count, "delivered": count, "retry_scheduled": count,
                "dead_lettered": count, "deferred": count,
                "latency_p50_ms": nullable_number, "latency_p90_ms": nullable_number,
                "latency_p99_ms": nullable_number,
            },
            "required": ["id", "attempts", "delivered", "retry_scheduled", "dead_lettered", "deferred", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms"],
        },
        "MainfluxWebhookInput": webhook_input,
        "MainfluxWebhooksCreate": {"oneOf": [
            {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/MainfluxWebhookInput"}},
            {
                "type": "object",
                "properties": {"webhooks": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/MainfluxWebhookInput"}}},
                "required": ["webhooks"],
                "additionalProperties": false,
            },
        ]},
        "MainfluxWebhook": {
            "type": "object",
            "properties": {
                "id": {"type": "string"}, "thing_id": {"type": "string"}, "group_id": {"type": "string"},
                "name": {"type": "string"}, "url": {"type": "string"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Values masked (\"****\")."},
                "metadata": {"type": "object"},
            },
            "required": ["id", "thing_id", "group_id", "name", "url", "headers"],
        },
        "MenderCredentials": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": ["http"]},
                "http": {
                    "type": "object",
                    "properties": {
                        "url": {"type": "string"},
                        "secret": {"type": "string", "pattern": "^[0-9a-f]{1,64}$", "description": "Hex; signs X-Men-Signature. Shown as <omitted>."},
                    },
                    "required": ["url"],
                },
            },
            "required": ["type", "http"],
        },
        "MenderIntegration": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "provider": {"type": "string", "enum": ["webhook"]},
                "credentials": {"$ref": "#/components/schemas/MenderCredentials"},
                "description": {"type": "string", "maxLength": 1024},
                "scope": {"type": "string", "enum": ["deviceauth", "inventory"], "description": "Event set (default deviceauth)."},
            },
            "required": ["provider", "credentials"],
        },
        "MenderIntegrations": {"type": "array", "items": {"$ref": "#/components/schemas/MenderIntegration"}},
        "MenderEvents": {"type": "array", "items": {
            "type": "object",
            "description": "The event as sent (id, type, data, time) with delivery_statuses [{integration_id, success, status_code, error}].",
        }},
        "MainfluxWebhooks": {"type": "array", "items": {"$ref": "#/components/schemas/MainfluxWebhook"}},
        "MainfluxRemove": {
            "type": "object",
            "properties": {"webhook_ids": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
            "required": ["webhook_ids"],
            "additionalProperties": false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_and_every_schema_reference_is_in_the_document() {
        let routes = super::super::routes::table();
        let doc = document(&routes);
        for r in &routes {
            let op = &doc["paths"][r.path][r.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{r:?} missing");
        }
        let text = doc.to_string();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("#/components/schemas/") {
            let tail = &rest[at + 21..];
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(
                doc["components"]["schemas"][&name].is_object()
                    || doc["components"]["schemas"][&name].is_array(),
                "schema {name}"
            );
            rest = tail;
        }
    }

    #[test]
    fn body_limits_are_documented_where_bodies_are_read() {
        let doc = document(&super::super::routes::table());
        for (path, method) in [
            ("/v1/endpoints", "post"),
            ("/v1/endpoints/{id}", "put"),
            ("/v1/endpoints/{id}", "patch"),
            ("/things/{thing_id}/webhooks", "post"),
        ] {
            let responses = &doc["paths"][path][method]["responses"];
            assert!(responses["413"].is_object(), "{method} {path}");
            assert!(responses["408"].is_object(), "{method} {path}");
        }
        assert!(doc["paths"]["/healthz"]["get"]["responses"]["413"].is_null());
    }

    #[test]
    fn reveal_is_documented() {
        let doc = document(&super::super::routes::table());
        let get = &doc["paths"]["/v1/endpoints/{id}"]["get"];
        let reveal = get["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "reveal")
            .expect("reveal is documented");
        assert_eq!(reveal["schema"]["enum"], json!(["headers"]));
        assert!(get["responses"]["403"].is_object());
    }
}
