//! `docs/openapi.json` is the document the code generates: a change to the admin API's
//! handlers or bodies that is not regenerated into it fails here.

#[test]
fn committed_document_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = manifold_control::openapi::json();
    assert!(
        committed == generated,
        "docs/openapi.json differs from the document the code generates; regenerate it with\n\
         \n    cargo run -p manifold -- openapi > docs/openapi.json\n"
    );
}

#[test]
fn every_admin_operation_is_described_with_its_errors() {
    let doc: serde_json::Value =
        serde_json::from_str(&manifold_control::openapi::json()).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let paths = doc["paths"].as_object().expect("paths");
    let mut admin_ops = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            let responses = op["responses"].as_object().expect("responses");
            if path.starts_with("/admin/") {
                admin_ops += 1;
                assert!(
                    responses.contains_key("401") && responses.contains_key("403"),
                    "{method} {path} describes no 401/403"
                );
                assert_eq!(
                    op["security"][0]["bearer"],
                    serde_json::json!([]),
                    "{method} {path} names no bearer security"
                );
            }
        }
    }
    assert_eq!(admin_ops, 13, "the admin API has 13 operations");
    for p in [
        "/stats",
        "/healthz",
        "/readyz",
        "/whip/{room}",
        "/whep/{room}/{id}",
    ] {
        assert!(paths.contains_key(p), "{p} is not described");
    }
}
