//! `depot admin ...`: offline tools over data dirs. `inspect` reads each dir without changing it
//! (see `depot_broker::inspect`) and names the latest store.

use anyhow::bail;
use depot_broker::inspect::{latest, InspectError};
use depot_broker::{inspect, Inspection};
use serde_json::{json, Value};

/// `depot admin inspect [--json] DATA_DIR...`: the report to print, a table or JSON. Fails only
/// when no dir is readable.
pub fn inspect_dirs(dirs: &[String], as_json: bool) -> anyhow::Result<String> {
    if dirs.is_empty() {
        bail!("name at least one data dir");
    }
    let results: Vec<(String, Result<Inspection, InspectError>)> =
        dirs.iter().map(|d| (d.to_string(), inspect(std::path::Path::new(d)))).collect();
    if results.iter().all(|(_, r)| r.is_err()) {
        let errors: Vec<String> = results.iter().filter_map(|(_, r)| r.as_ref().err().map(|e| e.to_string())).collect();
        bail!("no readable data dir:\n  {}", errors.join("\n  "));
    }
    Ok(if as_json { format!("{:#}\n", render_json(&results)) } else { render_table(&results) })
}

fn readable(results: &[(String, Result<Inspection, InspectError>)]) -> Vec<&Inspection> {
    results.iter().filter_map(|(_, r)| r.as_ref().ok()).collect()
}

/// The path of the latest store among the readable ones.
fn latest_path(results: &[(String, Result<Inspection, InspectError>)]) -> Option<String> {
    let stores: Vec<Inspection> = readable(results).into_iter().cloned().collect();
    latest(&stores).map(|i| stores[i].path.clone())
}

fn state(store: &Inspection) -> &'static str {
    if store.running.is_some() {
        "running"
    } else if store.clean {
        "clean"
    } else {
        "dirty"
    }
}

/// `{"stores": [...], "latest": path | null}`; stores in the order given, each either the
/// inspection or `{"path", "error"}`.
pub fn render_json(results: &[(String, Result<Inspection, InspectError>)]) -> Value {
    let latest = latest_path(results);
    let stores: Vec<Value> = results
        .iter()
        .map(|(path, r)| match r {
            Ok(s) => json!({
                "path": s.path,
                "cluster_id": s.cluster_id,
                "node_id": s.node_id,
                "last_term": s.last_term(),
                "last_index": s.last_index(),
                "vote": s.vote,
                "committed_index": s.committed_index,
                "state": state(s),
                "clean": s.clean,
                "running": s.running.is_some(),
                "running_pid": s.running.and_then(|r| r.pid),
                "latest": latest.as_deref() == Some(s.path.as_str()),
                "notes": s.notes,
            }),
            Err(e) => json!({ "path": path, "error": e.to_string() }),
        })
        .collect();
    let clusters = distinct_clusters(results);
    json!({ "stores": stores, "latest": latest, "clusters": clusters })
}

fn distinct_clusters(results: &[(String, Result<Inspection, InspectError>)]) -> Vec<String> {
    let mut ids: Vec<String> = readable(results).iter().filter_map(|s| s.cluster_id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

pub fn render_table(results: &[(String, Result<Inspection, InspectError>)]) -> String {
    let dash = || "-".to_owned();
    let opt = |v: Option<u64>| v.map_or_else(dash, |v| v.to_string());
    let header = ["PATH", "CLUSTER", "NODE", "TERM", "INDEX", "COMMITTED>=", "STATE"].map(str::to_owned);
    let mut rows: Vec<[String; 7]> = vec![header];
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    for (path, r) in results {
        match r {
            Ok(s) => {
                rows.push([
                    s.path.clone(),
                    s.cluster_id.clone().unwrap_or_else(dash),
                    opt(s.node_id),
                    opt(s.last_term()),
                    opt(s.last_index()),
                    opt(s.committed_index),
                    state(s).to_owned(),
                ]);
                notes.extend(s.notes.iter().map(|n| format!("note: {}: {n}", s.path)));
            }
            Err(e) => errors.push(format!("error: {path}: {}", error_detail(e))),
        }
    }
    let widths: Vec<usize> = (0..7).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    for line in errors.iter().chain(&notes) {
        out.push_str(line);
        out.push('\n');
    }
    let clusters = distinct_clusters(results);
    if clusters.len() > 1 {
        out.push_str(&format!("warning: these dirs belong to different clusters: {}\n", clusters.join(", ")));
    }
    let stores: Vec<Inspection> = readable(results).into_iter().cloned().collect();
    if let Some(best) = latest(&stores).map(|i| &stores[i]) {
        let position = best.last.map_or("an empty log".to_owned(), |p| format!("term {}, index {}", p.term, p.index));
        out.push_str(&format!("latest: {} ({position}, {})\n", best.path, state(best)));
    }
    out
}

/// The error without the path the table already shows.
fn error_detail(e: &InspectError) -> String {
    match e {
        InspectError::Missing { .. } => "no such directory".to_owned(),
        InspectError::NotADataDir { reason, .. } => format!("not a depot data dir ({reason})"),
        InspectError::Unreadable { detail, .. } => detail.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use depot_broker::inspect::Position;

    use super::*;

    fn store(path: &str, term: u64, index: u64, clean: bool) -> (String, Result<Inspection, InspectError>) {
        let s = Inspection {
            path: path.into(),
            cluster_id: Some("c1".into()),
            node_id: Some(1),
            last: Some(Position { term, index }),
            vote: None,
            committed_index: None,
            clean,
            running: None,
            notes: Vec::new(),
        };
        (path.into(), Ok(s))
    }

    #[test]
    fn table_names_the_latest_and_lists_errors() {
        let results = vec![
            store("/a", 2, 10, true),
            store("/b", 3, 5, false),
            ("/c".into(), Err(InspectError::Missing { path: "/c".into() })),
        ];
        let text = render_table(&results);
        assert!(text.starts_with("PATH  CLUSTER  NODE  TERM  INDEX  COMMITTED>=  STATE\n"), "{text}");
        assert!(text.contains("/b    c1       1     3     5      -            dirty\n"), "{text}");
        assert!(text.contains("error: /c: no such directory\n"), "{text}");
        assert!(text.ends_with("latest: /b (term 3, index 5, dirty)\n"), "{text}");
        let v = render_json(&results);
        assert_eq!(v["latest"], "/b");
        assert_eq!(v["stores"][0]["latest"], false);
        assert_eq!(v["stores"][1]["latest"], true);
        assert_eq!(v["stores"][1]["last_term"], 3);
        assert_eq!(v["stores"][2]["error"], "/c: no such directory");
    }

    #[test]
    fn nothing_readable_is_an_error() {
        let err = inspect_dirs(&["/nonexistent/depot-inspect-test".into()], false).unwrap_err();
        assert!(err.to_string().contains("no readable data dir"), "{err}");
        assert!(inspect_dirs(&[], false).is_err());
    }
}
