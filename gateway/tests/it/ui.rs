//! The web dashboard at `/ui`: its page and every embedded asset with the right content type,
//! CSP and cache headers, a clean 404 for anything else under `/ui/` (in-process); and the
//! dashboard end to end in Debian's headless Chromium driven by Playwright for Python, against
//! the real binary (gateway/tests/ui/e2e.py).

use std::path::Path;
use std::process::Command;

use depot_gateway::app::app;
use depot_gateway::ui;

use crate::common::{anonymous, get, node, send};

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
        "sources",
        "tiering",
        "overview-phone",
    ] {
        let png = shots.path().join(format!("{page}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("{}: {e}", png.display()));
        assert!(bytes.starts_with(b"\x89PNG"), "{} is not a PNG", png.display());
    }
}
