//! The OpenAPI 3 document of the API, derived from the code: the paths
//! from the route table ([`super::routes::table`]), the schemas of bodies
//! and answers from the Rust types the handlers read and write (schemars
//! `JsonSchema` derives, which follow their serde attributes, doc comments
//! and `config::limits` ranges). Request bodies are described as they are
//! deserialized, answers as they are serialized; where the two differ
//! (defaults, fields answers leave out) the request's schema is named
//! `<Name>Input`.
//!
//! What no handler type carries (errors added from a route's access and
//! body, links between operations) is written here.

use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::{JsonSchema, Schema};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::auth::Access;
use super::routes::Route;

/// How a route names the schema of a body: a function giving the schema
/// (a `$ref` to the type's component) of one Rust type, [`of`].
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T` (its component, added to the document).
pub fn of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// One object, or an array of them (`POST /v1/endpoints` takes either and
/// answers in kind).
// Documentation only: the handler reads the body by hand.
#[derive(Serialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "{T}OrList")]
#[allow(dead_code)]
pub enum OneOrList<T> {
    /// One.
    One(T),
    /// Several, at most 1 000.
    List(#[schemars(length(min = 1, max = 1000))] Vec<T>),
}

/// A JSON merge patch (RFC 7396) of an endpoint: the fields to change;
/// `null` removes an optional field.
// Documentation only: the handler applies the patch to the stored JSON.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "EndpointPatch")]
pub struct EndpointPatch(pub Map<String, Value>);

/// This document.
// Documentation only: the handler answers the document built at start.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "OpenApi")]
pub struct OpenApiDocument(pub Map<String, Value>);

/// The document for `routes`.
pub fn document(routes: &[Route]) -> Value {
    let mut requests = SchemaSettings::openapi3()
        .for_deserialize()
        .into_generator();
    let mut answers = SchemaSettings::openapi3().for_serialize().into_generator();
    let error = of::<super::errors::ErrorBody>(&mut answers);
    let mut paths = Map::new();
    let mut bodies = Vec::new();
    for route in routes {
        let mut op = operation(route, &mut answers, &error);
        if let Some(body) = route.body {
            let schema = finished(&mut requests, body);
            bodies.push((route.path, route.method.to_ascii_lowercase()));
            op["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema}},
            });
        }
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(route.method.to_ascii_lowercase(), op);
        }
    }
    let mut schemas = answers.take_definitions(true);
    let renamed = merge_requests(&mut schemas, requests.take_definitions(true));
    endpoint_input_as_read(&mut schemas);
    for (path, method) in bodies {
        if let Some(schema) = paths
            .get_mut(path)
            .and_then(|p| p.get_mut(&method))
            .map(|op| &mut op["requestBody"]["content"]["application/json"]["schema"])
        {
            rename_refs(schema, &renamed);
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
            "schemas": schemas,
        },
    })
}

/// What the endpoint's request schema cannot say from its type alone:
/// the handlers fill a missing `id` before reading a body as an endpoint
/// (generated on create, the path's on PUT; only the configuration file
/// must give one), and serde reads `active` as `enabled` (an alias, which
/// schemars leaves out).
fn endpoint_input_as_read(schemas: &mut Map<String, Value>) {
    let Some(input) = schemas.get_mut("EndpointInput") else {
        return;
    };
    if let Some(required) = input.get_mut("required").and_then(Value::as_array_mut) {
        required.retain(|field| field != "id");
    }
    if let Some(properties) = input.get_mut("properties").and_then(Value::as_object_mut) {
        properties.insert(
            "active".into(),
            json!({"type": "boolean", "description": "Alias of `enabled` (the CMDB's name for it); answers say `enabled`. Give one of the two."}),
        );
    }
}

/// The schema `of` names, with the generator's OpenAPI transforms applied
/// (the components get them in `take_definitions`; a schema given inline,
/// such as an array of references, gets them here).
fn finished(generator: &mut SchemaGenerator, of: SchemaFn) -> Value {
    let mut schema = of(generator);
    for transform in generator.transforms_mut() {
        transform.transform(&mut schema);
    }
    schema.to_value()
}

/// Adds the request schemas to the answer schemas: a type that reads as
/// it is written shares one component; one that differs gets its own,
/// `<Name>Input`. Returns the names changed.
fn merge_requests(
    schemas: &mut Map<String, Value>,
    requests: Map<String, Value>,
) -> Vec<(String, String)> {
    // A request schema differs when its text does or when it refers to
    // one that differs (the same `$ref` text then means another schema):
    // grow the set until nothing more refers to it.
    let mut renamed: Vec<(String, String)> = Vec::new();
    loop {
        let before = renamed.len();
        for (name, schema) in &requests {
            let Some(answer) = schemas.get(name) else {
                continue;
            };
            if renamed.iter().any(|(from, _)| from == name) {
                continue;
            }
            if answer != schema || refers_to_any(schema, &renamed) {
                renamed.push((name.clone(), format!("{name}Input")));
            }
        }
        if renamed.len() == before {
            break;
        }
    }
    for (name, mut schema) in requests {
        let Some((_, to)) = renamed.iter().find(|(from, _)| *from == name) else {
            // Read as it is written: the answer's component serves both.
            schemas.entry(name).or_insert(schema);
            continue;
        };
        rename_refs(&mut schema, &renamed);
        schemas.insert(to.clone(), schema);
    }
    renamed
}

/// Whether `value` has a `$ref` to one of the `renamed` components.
fn refers_to_any(value: &Value, renamed: &[(String, String)]) -> bool {
    match value {
        Value::Object(map) => {
            let here = map
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|t| t.strip_prefix("#/components/schemas/"))
                .is_some_and(|name| renamed.iter().any(|(from, _)| from == name));
            here || map.values().any(|v| refers_to_any(v, renamed))
        }
        Value::Array(items) => items.iter().any(|v| refers_to_any(v, renamed)),
        _ => false,
    }
}

/// Points the `$ref`s in `value` at the renamed components.
fn rename_refs(value: &mut Value, renamed: &[(String, String)]) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get_mut("$ref")
                && let Some(name) = target.strip_prefix("#/components/schemas/")
                && let Some((_, to)) = renamed.iter().find(|(from, _)| from == name)
            {
                *target = format!("#/components/schemas/{to}");
            }
            for v in map.values_mut() {
                rename_refs(v, renamed);
            }
        }
        Value::Array(items) => {
            for v in items {
                rename_refs(v, renamed);
            }
        }
        _ => {}
    }
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

/// The path and query parameters of `route`.
fn parameters(route: &Route) -> Vec<Value> {
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
    parameters
}

/// The OpenAPI operation of one route of the route table: parameters and
/// responses (the request body is added by [`document`]).
fn operation(route: &Route, answers: &mut SchemaGenerator, error: &Schema) -> Value {
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": error}},
        })
    };
    let parameters = parameters(route);
    let mut responses = Map::new();
    for a in &route.answers {
        let mut r = json!({"description": a.description});
        if let Some(schema) = a.schema {
            let schema = finished(answers, schema);
            r["content"] = json!({"application/json": {"schema": schema}});
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
    if route.access != Access::Public {
        op["security"] = json!([{"bearer": []}]);
    }
    op
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

    /// docs/openapi.json is this document, for readers without a running
    /// instance; `UPDATE_OPENAPI=1 cargo test --lib openapi` writes it.
    #[test]
    fn the_copy_in_docs_is_current() {
        let doc = document(&super::super::routes::table());
        let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let copy = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            copy == text,
            "docs/openapi.json differs from the document the API serves: run UPDATE_OPENAPI=1 cargo test --lib openapi"
        );
    }

    #[test]
    fn schemas_follow_the_types_serde_and_the_limits() {
        use crate::config::limits::{EVENT_PATTERNS, MAX_CONCURRENCY, URL_LEN};
        let doc = document(&super::super::routes::table());
        let schemas = &doc["components"]["schemas"];
        let answer = &schemas["Endpoint"];
        let input = &schemas["EndpointInput"];
        // Written: only the url is needed (serde defaults, the id filled
        // by the handlers); answered: every field without a skip.
        assert_eq!(input["required"], json!(["url"]));
        let required = answer["required"].as_array().unwrap();
        for field in ["id", "url", "events", "enabled", "signature", "batch"] {
            assert!(required.contains(&json!(field)), "{field}");
        }
        assert!(!required.contains(&json!("secret")));
        let p = &input["properties"];
        assert_eq!(p["max_concurrency"]["maximum"], json!(MAX_CONCURRENCY.max));
        assert_eq!(p["url"]["maxLength"], json!(URL_LEN.max));
        assert_eq!(p["events"]["maxItems"], json!(EVENT_PATTERNS.max));
        assert_eq!(input["additionalProperties"], json!(false));
        assert_eq!(
            p["active"]["type"],
            json!("boolean"),
            "the alias is documented"
        );
        // A request type that reads like its answer shares the component;
        // one that differs (defaults) is split.
        assert_eq!(
            schemas["SignatureScheme"]["oneOf"].as_array().map(Vec::len),
            Some(crate::config::SignatureScheme::ALL.len())
        );
        assert!(schemas.get("SignatureSchemeInput").is_none());
        assert!(schemas["BatchConfigInput"].is_object());
        let create = &doc["paths"]["/v1/endpoints"]["post"];
        assert_eq!(
            create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            json!("#/components/schemas/EndpointOrListInput")
        );
        assert_eq!(
            create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
            json!("#/components/schemas/EndpointOrList")
        );
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
