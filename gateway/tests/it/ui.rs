//! The web dashboard at `/ui`: its page and every embedded asset with the right content type,
//! CSP and cache headers, a clean 404 for anything else under `/ui/` (in-process); and the
//! dashboard end to end in Debian's headless Chromium driven by Playwright for Python, against
//! the real binary (gateway/tests/ui/e2e.py). The lag history the dashboard's group page draws
//! (`/ui/data/...`), sampled by a real node and guarded like the group itself.

use std::path::Path;
use std::process::Command;

use depot_gateway::app::app;
use depot_gateway::ui;

use crate::common::{anonymous, get, node, send};
use crate::e2e::eventually;

fn header<'a>(resp: &'a crate::common::Resp, name: &str) -> &'a str {
    resp.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no {name}: {resp:?}"))
}

/// What a page or module of the dashboard loads: `"/ui/..."` URLs in the page, and the modules
/// named by `from '...'` in a module (resolved against the module's path).
fn references(path: &str, text: &str) -> Vec<String> {
    let quoted_after = |marker: &str, quote: char| -> Vec<String> {
        text.match_indices(marker)
            .filter_map(|(at, _)| text[at + marker.len()..].split(quote).next().map(str::to_owned))
            .collect()
    };
    let mut found: Vec<String> =
        quoted_after("\"/ui/", '"').into_iter().filter(|r| !r.is_empty() && !r.starts_with('#')).collect();
    for module in quoted_after("from '", '\'') {
        let mut parts: Vec<&str> = path.split('/').collect();
        parts.pop();
        for segment in module.split('/') {
            match segment {
                "." => {}
                ".." => {
                    parts.pop();
                }
                s => parts.push(s),
            }
        }
        found.push(parts.join("/"));
    }
    found
}

#[actix_web::test]
async fn the_dashboard_and_every_asset_are_served_with_their_type_a_strict_csp_and_validators() {
    let n = node().await;
    let app = actix_web::test::init_service(app(n.state())).await;
    let assets: Vec<(&str, &str)> = ui::assets().collect();
    assert!(ui::CSP.starts_with("default-src 'self'"), "{}", ui::CSP);
    assert!(!ui::CSP.contains("unsafe"), "{}", ui::CSP);

    for page in ["/ui", "/ui/"] {
        let resp = send(&app, anonymous(get(page))).await;
        assert_eq!(resp.status.as_u16(), 200, "{page}: {resp:?}");
        assert_eq!(header(&resp, "content-type"), "text/html; charset=utf-8");
        assert_eq!(header(&resp, "content-security-policy"), ui::CSP);
        let html = String::from_utf8_lossy(&resp.raw);
        assert!(html.contains(r#"<script type="module" src="/ui/js/main.js"></script>"#), "{html}");
    }

    let mut referenced = Vec::new();
    for (path, content_type) in &assets {
        let url = format!("/ui/{path}");
        let resp = send(&app, anonymous(get(&url))).await;
        assert_eq!(resp.status.as_u16(), 200, "{url}: {resp:?}");
        assert_eq!(header(&resp, "content-type"), *content_type, "{url}");
        assert_eq!(header(&resp, "content-security-policy"), ui::CSP, "{url}");
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff", "{url}");
        assert_eq!(header(&resp, "cache-control"), "no-cache", "{url}");
        let text = String::from_utf8(resp.raw.to_vec()).unwrap();
        let elsewhere = text.replace("http://www.w3.org/2000/svg", "");
        assert!(!elsewhere.contains("http://") && !elsewhere.contains("https://"), "{url} refers to another origin");
        if path.ends_with(".js") {
            // Server data reaches the page as text nodes only.
            for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
                assert!(!text.contains(banned), "{url} uses {banned}");
            }
        }
        if path.ends_with(".html") {
            assert!(!text.contains("<script>") && !text.contains(" style="), "{url} has inline script or style");
        }
        referenced.extend(references(path, &text));

        // Revalidation: the same file is a 304 without a body.
        let etag = header(&resp, "etag").to_owned();
        let again = send(&app, anonymous(get(&url).insert_header(("if-none-match", etag.as_str())))).await;
        assert_eq!(again.status.as_u16(), 304, "{url}: {again:?}");
        assert!(again.raw.is_empty());
        assert_eq!(header(&again, "etag"), etag);
    }
    // Every file the page and its modules load is embedded.
    for r in &referenced {
        assert!(assets.iter().any(|(p, _)| p == r), "{r} is referenced but not served");
    }
    assert!(referenced.iter().any(|r| r == "js/pages/cluster.js"), "{referenced:?}");

    for missing in ["/ui/nope.js", "/ui/js/nope.js", "/ui/js/../index.html", "/ui/stations/orders", "/ui/index.htm"] {
        let resp = send(&app, anonymous(get(missing))).await;
        resp.problem(404, "not_found");
        assert_eq!(header(&resp, "content-type"), "application/problem+json", "{missing}");
    }
    let head = send(
        &app,
        anonymous(actix_web::test::TestRequest::default().method(actix_web::http::Method::HEAD).uri("/ui/app.css")),
    )
    .await;
    assert_eq!(head.status.as_u16(), 200, "{head:?}");
    assert_eq!(header(&head, "content-type"), "text/css; charset=utf-8");
    // Not part of the API document, like /docs.
    let doc = send(&app, get("/openapi.json")).await;
    let paths = doc.ok(200)["paths"].as_object().unwrap();
    assert!(paths.keys().all(|p| !p.starts_with("/ui")), "{:?}", paths.keys());
    n.broker.shutdown().await.unwrap();
}

/// What to tell whoever runs the tests when a prerequisite of the browser test is missing.
const INSTALL: &str = "the dashboard test needs Debian's Chromium (apt-get install -y chromium) and Playwright for \
                       Python 1.65.2 in the venv of $DEPOT_PYTHON (pip install playwright==1.65.2; never `playwright \
                       install`): .ci/run installs both";

#[test]
fn the_dashboard_end_to_end_in_headless_chromium() {
    let _heavy = depot_tests::serial::Heavy::take();
    let python = depot_tests::webhooks::python();
    let data = tempfile::tempdir().unwrap();
    let shots = tempfile::tempdir().unwrap();
    let server = crate::e2e::start(data.path(), &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/e2e.py");
    let out = Command::new(&python)
        .arg(&script)
        .env("DEPOT_UI_URL", format!("http://{}", server.addr))
        .env("DEPOT_UI_PASSWORD", crate::e2e::ADMIN_PASSWORD)
        .env("DEPOT_UI_SHOTS", shots.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}; {INSTALL}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(3) => panic!("{}\n{INSTALL}", stderr.trim()),
        _ => panic!("the browser test failed ({}):\n{}", out.status, stderr.trim()),
    }
    for page in [
        "signin",
        "overview",
        "station",
        "group",
        "dead-letters",
        "api-keys",
        "users",
        "cluster",
        "push",
        "push-group",
        "hooks",
        "sources",
        "tiering",
        "overview-phone",
    ] {
        let png = shots.path().join(format!("{page}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{} is not a PNG", png.display());
    }
}

/// The problem+json `code` of a response, after checking its status and content type.
fn problem(r: &depot_tests::http::Response, status: u16) -> String {
    assert_eq!(r.status, status, "{r:?}");
    assert!(r.headers.iter().any(|(k, v)| k == "content-type" && v == "application/problem+json"), "{r:?}");
    r.body["code"].as_str().unwrap_or_default().to_owned()
}

/// Issue 20: the group page's chart starts with the node's last hour. The node samples every
/// group's lag (every 10 s) and `/ui/data/.../lag` answers the samples to whoever may read the
/// group, as the API would: 401 without a token, 403 for a key scoped to other stations, 404 for
/// a group or station that does not exist. It is not in the API document.
#[test]
fn a_groups_lag_history_is_sampled_by_the_node_and_served_like_the_group() {
    use serde_json::json;
    let within = std::time::Duration::from_secs(60);
    let data = tempfile::tempdir().unwrap();
    let server = crate::e2e::start(data.path(), &[]);
    assert_eq!(server.json("PUT", "/v1/stations/hist", Some(&json!({}))).status, 201);
    let group = server.json("PUT", "/v1/stations/hist/consumer-groups/readers", Some(&json!({})));
    assert_eq!(group.status, 201, "{group:?}");
    for i in 0..5 {
        assert_eq!(server.json("POST", "/v1/stations/hist/messages", Some(&json!({ "n": i }))).status, 201);
    }
    let url = "/ui/data/stations/hist/groups/readers/lag";
    let samples = || {
        let r = server.json("GET", url, None);
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!((r.body["station"].as_str(), r.body["group"].as_str()), (Some("hist"), Some("readers")));
        assert_eq!(r.body["interval_ms"], 10_000, "{:?}", r.body);
        let samples = r.body["samples"].as_array().cloned().unwrap_or_default();
        let lags: Vec<u64> = samples.iter().filter_map(|s| s["lag"].as_u64()).collect();
        let times: Vec<i64> = samples.iter().filter_map(|s| s["at_ms"].as_i64()).collect();
        assert!(times.len() == lags.len() && times.windows(2).all(|w| w[0] < w[1]), "{samples:?}");
        lags
    };
    eventually(within, "a sample of the lag of 5", || samples().contains(&5).then_some(()));

    let fetched =
        server.json("POST", "/v1/stations/hist/consumer-groups/readers/fetch", Some(&json!({"max_messages": 5})));
    assert_eq!(fetched.status, 200, "{fetched:?}");
    let receipts: Vec<serde_json::Value> =
        fetched.body["messages"].as_array().unwrap().iter().map(|m| m["receipt"].clone()).collect();
    assert_eq!(receipts.len(), 5, "{fetched:?}");
    let acked =
        server.json("POST", "/v1/stations/hist/consumer-groups/readers/ack", Some(&json!({ "receipts": receipts })));
    assert_eq!(acked.status, 200, "{acked:?}");
    let lags = eventually(within, "a later sample of lag 0", || {
        let lags = samples();
        lags.iter().skip_while(|&&l| l != 5).any(|&l| l == 0).then_some(lags)
    });
    assert!(lags.len() >= 2, "{lags:?}");

    // Guarded like GET /v1/stations/hist/consumer-groups/readers.
    assert_eq!(problem(&server.json_as(None, "GET", url, None), 401), "unauthorized");
    let key = server.json(
        "POST",
        "/v1/api-keys",
        Some(&json!({"name": "elsewhere", "scopes": [{"stations": "other*", "actions": ["consume"]}]})),
    );
    assert_eq!(key.status, 201, "{key:?}");
    let key = key.body["key"].as_str().unwrap().to_owned();
    let api = server.json_as(Some(&key), "GET", "/v1/stations/hist/consumer-groups/readers", None);
    let ui = server.json_as(Some(&key), "GET", url, None);
    assert_eq!(problem(&ui, 403), problem(&api, 403));
    assert_eq!(
        problem(&server.json("GET", "/ui/data/stations/hist/groups/nobody/lag", None), 404),
        "consumer_group_not_found"
    );
    assert_eq!(
        problem(&server.json("GET", "/ui/data/stations/gone/groups/readers/lag", None), 404),
        "station_not_found"
    );
    // Deleted, the group's history goes with it (and the answer is the group's 404).
    assert_eq!(server.json("DELETE", "/v1/stations/hist/consumer-groups/readers", None).status, 204);
    assert_eq!(problem(&server.json("GET", url, None), 404), "consumer_group_not_found");
    let doc = server.json("GET", "/openapi.json", None);
    assert!(doc.body["paths"].as_object().unwrap().keys().all(|p| !p.starts_with("/ui")));
}
