#![allow(clippy::unwrap_used)]

use serde_json::Value;

#[test]
fn committed_document_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == depot_gateway::openapi_json(),
        "openapi/openapi.json differs from the code; regenerate it with\n  \
         cargo run -p depot-gateway --bin depot -- openapi > openapi/openapi.json"
    );
}

#[test]
fn every_operation_documents_problem_responses() {
    let doc: Value = serde_json::from_str(&depot_gateway::openapi_json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 18);
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path}");
            if path.starts_with("/v1/") {
                let problem = responses.iter().any(|(status, r)| {
                    status.starts_with('4')
                        && r["content"]["application/problem+json"]["schema"]["$ref"] == "#/components/schemas/Problem"
                });
                assert!(problem, "{method} {path} documents no problem+json error");
            }
        }
    }
}
