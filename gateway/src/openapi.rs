//! The OpenAPI 3.1 document: generated from the handlers in `routes/`, then completed with
//! what the handlers cannot say themselves (authentication, the middleware's refusals, unsigned
//! integer formats).

use actix_web::App;
use utoipa::OpenApi;
use utoipa_actix_web::AppExt;

use crate::error;
use crate::middleware::{http_limits, ratelimit};
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Depot HTTP API",
        description = "Depot, an HTTP-first message broker. Errors are RFC 9457 problem+json with a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    components(schemas(error::Problem)),
    tags(
        (name = "stations", description = "Stations hold messages"),
        (name = "messages", description = "Produce and browse"),
        (name = "consumer-groups", description = "Consumer groups"),
        (name = "consume", description = "Pull consumption and settlement"),
        (name = "dead-letters", description = "Dead letters"),
        (name = "push", description = "Push groups: webhooks out, signed as Standard Webhooks specifies"),
        (name = "hooks", description = "REST hooks: subscribe a URL to a station's new messages"),
        (name = "sources", description = "Webhook sources: senders post to an ingest URL and sign with their own scheme"),
        (name = "cluster", description = "Cluster membership"),
        (name = "operations", description = "Health, metrics and documents"),
    )
)]
struct ApiDoc;

/// The OpenAPI 3.1 document, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut api) =
        App::new().into_utoipa_app().openapi(ApiDoc::openapi()).configure(routes::configure).split_for_parts();
    add_rate_limited_responses(&mut api);
    add_body_timeout_responses(&mut api);
    add_head_limit_responses(&mut api);
    add_auth(&mut api);
    refine_document(&mut api);
    api
}

/// Paths that need no bearer token (an ingest URL carries its own token and the sender's
/// signature).
pub const PUBLIC_PATHS: [&str; 7] = [
    "/livez",
    "/readyz",
    "/openapi.json",
    "/v1/auth/token",
    "/v1/auth/refresh",
    "/v1/auth/revoke",
    "/v1/ingest/{source}/{token}",
];

/// A problem+json body, in the OpenAPI document.
fn problem_content() -> utoipa::openapi::Content {
    utoipa::openapi::ContentBuilder::new().schema(Some(utoipa::openapi::Ref::from_schema_name("Problem"))).build()
}

/// A problem+json response described by `description`, in the OpenAPI document.
fn problem_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    utoipa::openapi::RefOr::T(
        utoipa::openapi::ResponseBuilder::new()
            .description(description)
            .content("application/problem+json", problem_content())
            .build(),
    )
}

/// Every operation but the public ones requires a bearer token and can answer 401 and 403.
fn add_auth(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
    let components = api.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        "bearer".to_owned(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT or API key")
                .description(Some(
                    "An access JWT from POST /v1/auth/token, or an API key `dk_...`. Missing or invalid: \
                     401 `unauthorized` with `WWW-Authenticate: Bearer`; valid but not allowed: 403 `forbidden`.",
                ))
                .build(),
        ),
    );
    let problem = problem_response;
    const UNAUTHORIZED: &str = "unauthorized: no bearer token, or an invalid, expired or revoked one";
    const FORBIDDEN: &str = "forbidden: the credential does not allow this";
    for (path, item) in api.paths.paths.iter_mut() {
        if PUBLIC_PATHS.contains(&path.as_str()) || path.starts_with("/docs") {
            continue;
        }
        for operation in operations_mut(item) {
            operation.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
            let responses = &mut operation.responses.responses;
            responses.insert("401".to_owned(), problem(UNAUTHORIZED));
            responses.insert("403".to_owned(), problem(FORBIDDEN));
        }
    }
}

/// Every operation that reads a request body can answer 408 when the body arrives too slowly.
fn add_body_timeout_responses(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Ref, RefOr, ResponseBuilder};
    let response = ResponseBuilder::new()
        .description(
            "request_timeout: the body did not arrive within the server's `body_read_timeout_ms` \
             (default 30000); the connection is closed.",
        )
        .content("application/problem+json", problem_content())
        .build();
    api.components
        .get_or_insert_with(Default::default)
        .responses
        .insert("RequestTimeout".to_owned(), RefOr::T(response));
    for item in api.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            if operation.request_body.is_some() {
                operation
                    .responses
                    .responses
                    .insert("408".to_owned(), RefOr::Ref(Ref::from_response_name("RequestTimeout")));
            }
        }
    }
}

/// Every operation can answer 414 and 431 (limits on the request head).
fn add_head_limit_responses(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{Ref, RefOr};
    let problem = problem_response;
    let responses = &mut api.components.get_or_insert_with(Default::default).responses;
    responses.insert(
        "UriTooLong".to_owned(),
        problem(&format!("uri_too_long: the request target is longer than {} bytes", http_limits::MAX_URI)),
    );
    responses.insert(
        "HeaderFieldsTooLarge".to_owned(),
        problem(&format!(
            "header_fields_too_large: the header fields are larger than {} bytes",
            http_limits::MAX_HEADER_BYTES
        )),
    );
    for item in api.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            let responses = &mut operation.responses.responses;
            responses.insert("414".to_owned(), RefOr::Ref(Ref::from_response_name("UriTooLong")));
            responses.insert("431".to_owned(), RefOr::Ref(Ref::from_response_name("HeaderFieldsTooLarge")));
        }
    }
}

/// Every operation but the exempt probes can answer 429; one shared response describes it.
fn add_rate_limited_responses(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::{KnownFormat, ObjectBuilder, Ref, RefOr, ResponseBuilder, SchemaFormat, Type};
    let integer =
        || ObjectBuilder::new().schema_type(Type::Integer).format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)));
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let response = ResponseBuilder::new()
        .description(
            "rate_limited: over the per-client-IP quota (IPv6 keyed by /64). Headers follow the IETF draft \
             (draft-ietf-httpapi-ratelimit-headers) structured-field form, only on 429: \
             `RateLimit-Policy: \"ip\";q=<burst>;w=<seconds to refill an empty bucket>` and \
             `RateLimit: \"ip\";r=0;t=<seconds until a request passes>`; `Retry-After` is the same \
             number of seconds, rounded up.",
        )
        .header("Retry-After", HeaderBuilder::new().schema(integer()).description(Some("Seconds to wait")).build())
        .header(
            "RateLimit-Policy",
            HeaderBuilder::new().schema(string()).description(Some("e.g. `\"ip\";q=2000;w=2`")).build(),
        )
        .header("RateLimit", HeaderBuilder::new().schema(string()).description(Some("e.g. `\"ip\";r=0;t=1`")).build())
        .content("application/problem+json", problem_content())
        .build();
    api.components.get_or_insert_with(Default::default).responses.insert("RateLimited".to_owned(), RefOr::T(response));
    for (path, item) in api.paths.paths.iter_mut() {
        if ratelimit::EXEMPT_PATHS.contains(&path.as_str()) {
            continue;
        }
        for operation in operations_mut(item) {
            operation.responses.responses.insert("429".to_owned(), RefOr::Ref(Ref::from_response_name("RateLimited")));
        }
    }
}

/// Every operation of a path item.
pub(crate) fn operations_mut(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// The document as served and committed: pretty JSON with a trailing newline.
pub fn openapi_json() -> String {
    let mut json = openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    json.push('\n');
    json
}

/// [`openapi_json`], built once per process: what `/openapi.json` serves.
pub(crate) fn served_json() -> actix_web::web::Bytes {
    static SERVED: std::sync::OnceLock<actix_web::web::Bytes> = std::sync::OnceLock::new();
    SERVED.get_or_init(|| actix_web::web::Bytes::from(openapi_json())).clone()
}

/// Spells utoipa's unsigned integer formats as OpenAPI tools know them, with their bounds; and
/// documents optional parameters as absent rather than `null`.
///
/// With `non_strict_integers`, utoipa 5 documents a `u64` as `format: u-int64` (its kebab-case
/// spelling of `UInt64`) and `minimum: 0` but no maximum, so a value past `u64::MAX` (which the
/// server rightly refuses with 400) would count as schema-valid. This renames `u-int8/16/32/64`
/// to `uint8/16/32/64` and adds the type's maximum where none is documented.
fn refine_document(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{
        AdditionalProperties, ArrayItems, KnownFormat, Schema, SchemaFormat, SchemaType, Type,
    };
    use utoipa::openapi::{Content, RefOr};
    use utoipa::Number;

    fn schema(s: &mut RefOr<Schema>) {
        let RefOr::T(s) = s else { return };
        match s {
            Schema::Object(o) => {
                let unsigned = match &o.format {
                    Some(SchemaFormat::KnownFormat(KnownFormat::UInt8)) => Some(("uint8", usize::from(u8::MAX))),
                    Some(SchemaFormat::KnownFormat(KnownFormat::UInt16)) => Some(("uint16", usize::from(u16::MAX))),
                    Some(SchemaFormat::KnownFormat(KnownFormat::UInt32)) => Some(("uint32", u32::MAX as usize)),
                    Some(SchemaFormat::KnownFormat(KnownFormat::UInt64)) => Some(("uint64", u64::MAX as usize)),
                    _ => None,
                };
                if let Some((format, max)) = unsigned {
                    o.format = Some(SchemaFormat::Custom(format.to_owned()));
                    o.maximum.get_or_insert(Number::UInt(max));
                }
                o.properties.values_mut().for_each(schema);
                if let Some(AdditionalProperties::RefOr(extra)) = o.additional_properties.as_deref_mut() {
                    schema(extra);
                }
            }
            Schema::Array(a) => {
                if let ArrayItems::RefOrSchema(items) = &mut a.items {
                    schema(items);
                }
            }
            Schema::OneOf(o) => o.items.iter_mut().for_each(schema),
            Schema::AllOf(o) => o.items.iter_mut().for_each(schema),
            Schema::AnyOf(o) => o.items.iter_mut().for_each(schema),
            _ => {}
        }
    }
    // A path, query or header parameter is a string on the wire, never JSON `null`: an optional
    // one (`Option<T>`, which utoipa documents as `[T, "null"]`) is optional by being absent.
    fn not_null(s: &mut RefOr<Schema>) {
        if let RefOr::T(Schema::Object(o)) = s {
            if let SchemaType::Array(types) = &o.schema_type {
                let kept: Vec<Type> = types.iter().filter(|t| **t != Type::Null).cloned().collect();
                o.schema_type = match kept.as_slice() {
                    [one] => SchemaType::Type(one.clone()),
                    _ => SchemaType::Array(kept),
                };
            }
        }
    }
    fn content(c: &mut Content) {
        if let Some(s) = &mut c.schema {
            schema(s);
        }
    }

    routes::groups::document_backoff_bound(api);
    if let Some(components) = &mut api.components {
        components.schemas.values_mut().for_each(schema);
    }
    for item in api.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            // utoipa-actix-web adds a bare parameter for each `{name}` of the route on top of the
            // documented one (with its pattern) that comes first: keep only the first of each.
            if let Some(parameters) = &mut operation.parameters {
                let mut seen = Vec::new();
                parameters.retain(|p| {
                    let key = (p.name.clone(), serde_json::to_string(&p.parameter_in).unwrap_or_default());
                    let first = !seen.contains(&key);
                    seen.push(key);
                    first
                });
            }
            for p in operation.parameters.iter_mut().flatten() {
                if let Some(s) = &mut p.schema {
                    schema(s);
                    not_null(s);
                }
            }
            if let Some(body) = &mut operation.request_body {
                body.content.values_mut().for_each(content);
            }
            for response in operation.responses.responses.values_mut() {
                if let RefOr::T(response) = response {
                    response.content.values_mut().for_each(content);
                    response.headers.values_mut().for_each(|h| schema(&mut h.schema));
                }
            }
        }
    }
}
