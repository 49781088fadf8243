//! The Grafana dashboard in deploy/grafana/depot.json asks only for series that Depot exports:
//! every `depot_*` name in every panel's PromQL is declared on a live node's /metrics (a node
//! with a tiering bucket, so the tiering series are there too). A renamed or removed metric
//! fails here rather than leaving a panel empty. Likewise the `/metrics` description in the
//! OpenAPI document names only declared families, and docs/observability.md names them all.

use std::collections::BTreeSet;
use std::path::Path;

use depot_tests::s3::S3Server;
use serde_json::Value;

use crate::e2e::{start, Server};
use crate::scrape::Scrape;

/// A file of the repository, by its path from the workspace root.
fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    serde_json::from_str(&repo_file("deploy/grafana/depot.json")).unwrap_or_else(|e| panic!("depot.json: {e}"))
}

/// A node with a tiering bucket, which declares every family (the tiering ones only exist with
/// a bucket), scraped once.
fn scrape_of_a_tiering_node() -> Scrape {
    let s3 = S3Server::start();
    s3.create_bucket("dashboard");
    let env = s3.depot_env("dashboard");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let dir = tempfile::tempdir().unwrap();
    let server: Server = start(&dir.path().join("data"), &env);
    Scrape::of(&server)
}

/// Every panel, those nested in rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut todo: Vec<&Value> = dashboard["panels"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    while let Some(panel) = todo.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            todo.extend(nested);
        }
        out.push(panel);
    }
    out
}

/// The `depot_*` metric names of a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("depot_") {
        let preceded_by_ident = rest[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[i..];
        let end =
            tail.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')).unwrap_or(tail.len());
        if !preceded_by_ident {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn extracts_metric_names_from_promql() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(depot_log_fsync_duration_seconds_bucket{instance=~\"$i\"}[5m]))) \
         / depot_disk_total_bytes + not_depot_x",
    );
    assert_eq!(
        names,
        BTreeSet::from(["depot_log_fsync_duration_seconds_bucket".into(), "depot_disk_total_bytes".into()])
    );
}

#[test]
fn the_grafana_dashboard_uses_only_metrics_a_live_node_exposes() {
    let dashboard = dashboard();
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS", "imported with a Prometheus data source input");
    let mut used: Vec<(String, String)> = Vec::new();
    for panel in panels(&dashboard) {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().unwrap_or_else(|| panic!("{title}: no targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("{title}: a target without expr"));
            let names = metric_names(expr);
            assert!(!names.is_empty(), "{title}: {expr} uses no depot metric");
            used.extend(names.into_iter().map(|n| (title.clone(), n)));
        }
    }
    let variable = dashboard["templating"]["list"][0]["definition"].as_str().unwrap_or_default().to_owned();
    used.extend(metric_names(&variable).into_iter().map(|n| ("$instance".to_owned(), n)));

    let scrape = scrape_of_a_tiering_node();
    let missing: Vec<&(String, String)> = used.iter().filter(|(_, name)| !scrape.exposes(name)).collect();
    assert!(missing.is_empty(), "panels ask for series /metrics does not declare: {missing:?}\n{}", scrape.text);
    // The dashboard covers what operators asked for (issue 20).
    for needed in [
        "depot_raft_apply_lag",
        "depot_raft_leader_changes_total",
        "depot_log_fsync_duration_seconds_bucket",
        "depot_disk_free_bytes",
        "depot_process_resident_memory_bytes",
        "depot_open_fds",
        "depot_station_local_bytes",
        "depot_station_tiered_bytes",
        "depot_tier_upload_failures_total",
        "depot_push_deliveries_total",
        "depot_consumer_group_lag",
    ] {
        assert!(used.iter().any(|(_, n)| n == needed), "no panel shows {needed}");
    }
}

/// Issue 20: the OpenAPI description of `/metrics` named only the first few families. Now it
/// names the main ones of each area, none that a node does not declare, and points to
/// docs/observability.md, which names every family a node declares.
#[test]
fn the_metrics_description_and_the_docs_name_the_declared_families() {
    let openapi: Value = serde_json::from_str(&repo_file("openapi/openapi.json")).unwrap();
    // utoipa puts the doc comment's first paragraph in the summary.
    let operation = &openapi["paths"]["/metrics"]["get"];
    let description = ["summary", "description"].map(|k| operation[k].as_str().unwrap_or_default()).join("\n");
    assert!(description.contains("docs/observability.md"), "{description}");
    // `depot_` alone is the prefix the description states, not a family.
    let described: BTreeSet<String> = metric_names(&description).into_iter().filter(|n| n != "depot_").collect();
    let docs = repo_file("docs/observability.md");
    let scrape = scrape_of_a_tiering_node();
    let stale: Vec<&String> = described.iter().filter(|n| !scrape.exposes(n)).collect();
    assert!(stale.is_empty(), "the /metrics description names undeclared series: {stale:?}\n{}", scrape.text);
    for area in [
        "depot_http_",
        "depot_messages_",
        "depot_consumer_group_",
        "depot_station_",
        "depot_raft_",
        "depot_disk_",
        "depot_log_fsync",
        "depot_push_",
        "depot_source_",
        "depot_tier_",
        "depot_process_",
    ] {
        assert!(described.iter().any(|n| n.starts_with(area)), "the /metrics description names no {area}* family");
    }
    let undocumented: Vec<&String> = scrape
        .types
        .keys()
        .filter(|family| !docs.contains(&format!("`{family}`")) && !docs.contains(&format!("`{family}{{")))
        .collect();
    assert!(undocumented.is_empty(), "docs/observability.md does not name {undocumented:?}");
}
