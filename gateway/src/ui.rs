//! The web dashboard at `/ui`: hand-written HTML, CSS and JavaScript modules from `gateway/ui/`,
//! embedded in the binary (no build step, no CDN). The page is static; it calls the JSON API with
//! a Bearer token like any other client, so these routes need no credentials and are left out of
//! the OpenAPI document, as `/docs` is. Navigation inside the app is by URL fragment
//! (`/ui/#/stations/orders`), so the only paths are the page and its assets: any other path under
//! `/ui/` is a problem+json 404.
//!
//! One exception, also outside the API document: `/ui/data/...` is JSON for the dashboard alone
//! (the lag history of a group, which the API does not keep), behind the same credentials and
//! station permissions as the API resource it extends. It is internal: its shape follows the
//! dashboard's needs and may change with any release.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{guard, web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use crate::auth::extract::SeeStation;
use crate::auth::Authorized;
use crate::error::ApiError;
use crate::lag_history::{Sample, KEEP_MS, SAMPLE_EVERY};
use crate::state::AppState;

/// No script but our own files, no inline script or style, no framing, API calls only to this
/// origin. Payloads are put in the page as text nodes, and this is the second line of defence.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
                       form-action 'self'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset { path: $path, content_type: $content_type, body: include_str!(concat!("../ui/", $path)) }
    };
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the dashboard; `index.html` is the page itself.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/main.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/format.js", JS),
    asset!("js/chart.js", JS),
    asset!("js/push_form.js", JS),
    asset!("js/pages/signin.js", JS),
    asset!("js/pages/overview.js", JS),
    asset!("js/pages/station.js", JS),
    asset!("js/pages/groups.js", JS),
    asset!("js/pages/dead_letters.js", JS),
    asset!("js/pages/keys.js", JS),
    asset!("js/pages/users.js", JS),
    asset!("js/pages/cluster.js", JS),
    asset!("js/pages/push.js", JS),
    asset!("js/pages/hooks.js", JS),
    asset!("js/pages/sources.js", JS),
    asset!("js/pages/tiering.js", JS),
];

/// The paths under `/ui/` this serves and their content types, for tests and docs.
pub fn assets() -> impl Iterator<Item = (&'static str, &'static str)> {
    ASSETS.iter().map(|a| (a.path, a.content_type))
}

/// A strong validator per file (by index in [`ASSETS`]), computed once: the files change only
/// with the binary.
fn etag(i: usize) -> &'static str {
    static TAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let digest = Sha256::digest(a.body.as_bytes());
                let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
                format!("\"{hex}\"")
            })
            .collect()
    });
    tags[i].as_str()
}

fn serve(req: &HttpRequest, i: usize) -> HttpResponse {
    let (asset, tag) = (&ASSETS[i], etag(i));
    let mut resp = if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag))
    {
        HttpResponse::NotModified().finish()
    } else {
        HttpResponse::Ok().content_type(asset.content_type).body(asset.body)
    };
    let headers = resp.headers_mut();
    // The modules import each other by fixed names, so a cached copy is revalidated on every load
    // (a 304 when unchanged) rather than trusted for a time: an upgraded binary never serves a
    // page that mixes old and new modules.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ETAG, HeaderValue::from_static(tag));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

async fn index(req: HttpRequest) -> HttpResponse {
    serve(&req, 0)
}

async fn file(req: HttpRequest, path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let path = path.into_inner();
    match ASSETS.iter().position(|a| a.path == path) {
        Some(i) => Ok(serve(&req, i)),
        None => Err(ApiError::RouteNotFound(format!("{} {}", req.method(), req.path()))),
    }
}

/// What `/ui/data/stations/{station}/groups/{group}/lag` answers.
#[derive(serde::Serialize)]
struct LagHistoryBody {
    station: String,
    group: String,
    /// How often the node samples, in milliseconds.
    interval_ms: u64,
    /// How far back samples are kept, in milliseconds.
    keep_ms: i64,
    /// Oldest first.
    samples: Vec<Sample>,
}

/// A group's lag over the last hour as this node sampled it. Reading the group first gives the
/// API's answers for a station or group that does not exist (404) and for names that are not
/// names (400); [`SeeStation`] the same 403 as reading the group through the API.
async fn group_lag(
    _auth: Authorized<SeeStation>,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (station, group) = crate::routes::groups::names(path)?;
    state.broker.group(&station, &group).await?;
    let samples = state.lag_history.samples(&station, &group);
    let body = LagHistoryBody {
        interval_ms: u64::try_from(SAMPLE_EVERY.as_millis()).unwrap_or(u64::MAX),
        keep_ms: KEEP_MS,
        samples,
        station,
        group,
    };
    Ok(HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "no-store")).json(body))
}

/// GET, and HEAD (actix sends the headers without the body).
fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Registers `/ui`, `/ui/` (the page), the dashboard's data and `/ui/{file}` (its assets; last,
/// as it takes any path).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/ui/data/stations/{station}/groups/{group}/lag", web::get().to(group_lag))
        .route("/ui", get_or_head().to(index))
        .route("/ui/", get_or_head().to(index))
        .route("/ui/{file:.+}", get_or_head().to(file));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_listed_once_with_a_content_type_for_its_kind() {
        let mut seen = std::collections::HashSet::new();
        for a in ASSETS {
            assert!(seen.insert(a.path), "{} twice", a.path);
            let want = match a.path.rsplit('.').next() {
                Some("html") => HTML,
                Some("js") => JS,
                Some("css") => "text/css; charset=utf-8",
                Some("svg") => "image/svg+xml",
                other => panic!("no content type for {other:?}"),
            };
            assert_eq!(a.content_type, want, "{}", a.path);
        }
        assert_eq!(ASSETS[0].path, "index.html");
    }
}
