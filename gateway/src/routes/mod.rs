//! One file per resource; each registers its own routes in its `configure`.

use utoipa_actix_web::service_config::ServiceConfig;

use crate::error::ApiError;

pub mod api_keys;
pub mod auth;
pub mod cluster;
pub mod consume;
pub mod dead_letters;
pub mod groups;
pub mod messages;
pub mod ops;
pub mod stations;
pub mod users;

/// The router tries routes in this order, each by its pattern, so the hot data plane (produce,
/// then fetch and settle) comes first.
pub fn configure(cfg: &mut ServiceConfig) {
    cfg.configure(messages::configure)
        .configure(consume::configure)
        .configure(groups::configure)
        .configure(stations::configure)
        .configure(dead_letters::configure)
        .configure(auth::configure)
        .configure(users::configure)
        .configure(api_keys::configure)
        .configure(cluster::configure)
        .configure(ops::configure);
}

/// The path of a station's operations; documents the name rules (API.md: 1-128 of `a-z 0-9 . _ -`,
/// starting with a letter or digit). Handlers still validate with [`crate::error::check_name`].
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct StationPath {
    /// Station name.
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]*$", min_length = 1, max_length = 128)]
    station: String,
}

/// The path of a consumer group's operations.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct GroupPath {
    /// Station name.
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]*$", min_length = 1, max_length = 128)]
    station: String,
    /// Consumer group name.
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]*$", min_length = 1, max_length = 128)]
    group: String,
}

/// The path of one dead letter.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct DeadLetterPath {
    /// Station name.
    #[param(pattern = r"^[a-z0-9][a-z0-9._-]*$", min_length = 1, max_length = 128)]
    station: String,
    /// Dead-letter id.
    id: u64,
}

/// A field that may only be absent or `null` (documents "give one of these, not both").
pub(crate) fn null_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new().schema_type(utoipa::openapi::schema::Type::Null).build()
}

/// The documented paths as actix patterns, with the methods each has, most specific first
/// (fewest parameters), so `/dead-letters/redrive` wins over `/dead-letters/{id}`.
fn route_table() -> &'static [(String, actix_web::dev::ResourceDef, Vec<&'static str>)] {
    static TABLE: std::sync::OnceLock<Vec<(String, actix_web::dev::ResourceDef, Vec<&'static str>)>> =
        std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table: Vec<_> = crate::openapi()
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("HEAD", item.head.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                    ("OPTIONS", item.options.is_some()),
                    ("TRACE", item.trace.is_some()),
                ];
                let methods = methods.into_iter().filter(|(_, has)| *has).map(|(m, _)| m).collect();
                (path.clone(), actix_web::dev::ResourceDef::new(path.as_str()), methods)
            })
            .collect();
        table.sort_by_key(|(path, _, _)| path.matches('{').count());
        table
    })
}

/// What to answer for a request no route took: 405 `method_not_allowed` (with `Allow`) when its
/// path names a documented resource that lacks the method; 400 when the method fits but a path
/// parameter does not (e.g. a dead-letter id that is not a number); else 404 `not_found`.
pub fn unrouted(method: &actix_web::http::Method, path: &str) -> ApiError {
    match route_table().iter().find(|(_, def, _)| def.is_match(path)) {
        Some((template, _, methods)) if methods.contains(&method.as_str()) => {
            ApiError::InvalidRequest(format!("path {path} does not fit {template}"))
        }
        Some((_, _, methods)) => ApiError::MethodNotAllowed { method: method.to_string(), allow: methods.join(", ") },
        None => ApiError::RouteNotFound(format!("{method} {path}")),
    }
}

/// Spells utoipa's unsigned integer formats as OpenAPI tools know them, with their bounds; and
/// documents optional parameters as absent rather than `null`.
///
/// With `non_strict_integers`, utoipa 5 documents a `u64` as `format: u-int64` (its kebab-case
/// spelling of `UInt64`) and `minimum: 0` but no maximum, so a value past `u64::MAX` (which the
/// server rightly refuses with 400) would count as schema-valid. This renames `u-int8/16/32/64`
/// to `uint8/16/32/64` and adds the type's maximum where none is documented.
pub(crate) fn refine_document(api: &mut utoipa::openapi::OpenApi) {
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

    groups::document_backoff_bound(api);
    if let Some(components) = &mut api.components {
        components.schemas.values_mut().for_each(schema);
    }
    for item in api.paths.paths.values_mut() {
        for operation in crate::operations_mut(item) {
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
