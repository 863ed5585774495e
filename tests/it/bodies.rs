//! End to end: `GET /api/v1/bodies` (the `/bodies` page's one request: node fields,
//! the GPU figures of the last telemetry, assigned heads, open anomalies; filters,
//! pages, errors) and the session-monitoring runbook's two lines run verbatim with the
//! real `curl` and `jq` against a server on a real port.

use crate::common::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// The runbook's lines, as operators type them (with the `Authorization` header added).
const RUNBOOK_TELEMETRY: &str = r#"curl -s -H "Authorization: Bearer $TOKEN" $SERVER/api/v1/bodies | jq -c ".[] | select(.name==\"$BODY_NAME\") | {gpu: .gpu_utilization_pct, vram: .gpu_memory_used_mb, streams: .stream_count}""#;
const RUNBOOK_ORPHANS: &str = r#"curl -s -H "Authorization: Bearer $TOKEN" $SERVER/api/v1/body-anomalies | jq "[.[] | select(.body_name==\"$BODY_NAME\" and .type==\"orphan_stream\")] | length""#;

fn quick_anomalies(c: &mut hydra::cluster::config::Config) {
    c.anomaly_check_interval = Duration::from_millis(50);
    with_fleet(c);
}

/// Runs `line` with `sh -c` (so the shell expands the variables, as in a terminal) and
/// returns its stdout; fails on a non-zero exit with its stderr.
async fn shell(line: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(line).envs(env.iter().copied());
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("sh runs")).await.unwrap();
    assert!(out.status.success(), "{line}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// The open anomaly types of body `id` as `/api/v1/bodies` shows them.
async fn body_in_list(s: &TestServer, id: &str) -> Value {
    let (status, list) = get(s, "/api/v1/bodies", OBSERVER).await;
    assert_eq!(status, 200, "{list}");
    list.as_array().unwrap().iter().find(|b| b["id"] == id).cloned().unwrap_or(Value::Null)
}

async fn anomaly_types(s: &TestServer, id: &str) -> Vec<Value> {
    let b = body_in_list(s, id).await;
    b["anomalies"].as_array().map(|a| a.iter().map(|a| a["type"].clone()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn the_runbook_lines_work_verbatim_with_curl_and_jq() {
    for tool in ["curl", "jq"] {
        let found = std::process::Command::new("sh").arg("-c").arg(format!("command -v {tool}")).output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "{tool} is not installed: the runbook test needs it (apt-get install -y {tool}; .ci/run does)"
        );
    }
    let s = spawn_app_with(quick_anomalies).await;
    // The body the runbook asks about, streaming with no head watching, and another
    // one the select must leave out.
    let telemetry = |gpu: u32, vram: u32| json!({"gpu_utilization_pct": gpu, "gpu_memory_used_mb": vram, "stream_count": 1, "gpu_mismatch_sec": 0});
    let (id, token) = approved_body(&s, "render-north-07").await;
    let (other, other_token) = approved_body(&s, "render-north-08").await;
    for (token, t) in [(&token, telemetry(97, 8123)), (&other_token, telemetry(12, 512))] {
        let (status, answer) =
            heartbeat(&s, token, json!({"stream_status": "streaming", "telemetry": t})).await;
        assert_eq!(status, 200, "{answer}");
    }
    let orphans = || async {
        anomaly_types(&s, &id).await == ["orphan_stream"]
            && anomaly_types(&s, &other).await == ["orphan_stream"]
    };
    assert!(eventually(GUARD, orphans).await, "{}", body_in_list(&s, &id).await);

    let env = [("SERVER", s.url.as_str()), ("TOKEN", OBSERVER), ("BODY_NAME", "render-north-07")];
    assert_eq!(shell(RUNBOOK_TELEMETRY, &env).await, "{\"gpu\":97,\"vram\":8123,\"streams\":1}\n");
    assert_eq!(shell(RUNBOOK_ORPHANS, &env).await, "1\n");
}

#[tokio::test]
async fn bodies_list_telemetry_heads_and_anomalies_in_one_request() {
    let s = spawn_app_with(quick_anomalies).await;
    let (a, a_token) = approved_body(&s, "body-a").await;
    let (b, _) = enroll(&s, "body-b").await;
    approve_at(&s, &b, &["hydrabody"], "south", "dome").await;
    let (pending, _) = enroll(&s, "body-pending").await;
    let (head, _) = enroll_head(&s, "ipad-1").await;
    let (status, answer) =
        post(&s, &format!("/api/v1/nodes/{b}/drain"), ADMIN, json!({"draining": true})).await;
    assert_eq!(status, 200, "{answer}");
    let beat = json!({
        "agent_version": "0.9.1", "provider_status": "running", "provider_version": "sunshine-2025.1",
        "stream_status": "streaming",
        "telemetry": {"gpu_utilization_pct": 55.5, "gpu_memory_used_mb": 2048, "stream_count": 1, "gpu_mismatch_sec": 12},
    });
    assert_eq!(heartbeat(&s, &a_token, beat).await.0, 200);
    let (status, answer) =
        post(&s, &format!("/api/v1/nodes/{head}/head-assignment"), ADMIN, json!({"body_id": a})).await;
    assert_eq!(status, 200, "{answer}");
    // The head assigned to it does not stream: an orphan stream.
    assert!(eventually(GUARD, || async { anomaly_types(&s, &a).await == ["orphan_stream"] }).await);

    let (status, list) = get(&s, "/api/v1/bodies", ADMIN).await;
    assert_eq!(status, 200, "{list}");
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(ids(list.as_array().unwrap()), want, "approved bodies only: no pending node, no head");
    assert!(!ids(list.as_array().unwrap()).contains(&pending));
    let of = |id: &str| list.as_array().unwrap().iter().find(|n| n["id"] == id).unwrap().clone();
    let body_a = of(&a);
    for (field, value) in [
        ("name", json!("body-a")),
        ("district", json!("north")),
        ("venue", json!("arena")),
        ("node_status", json!("online")),
        ("draining", json!(false)),
        ("agent_version", json!("0.9.1")),
        ("provider_version", json!("sunshine-2025.1")),
        ("provider_status", json!("running")),
        ("stream_status", json!("streaming")),
        ("gpu_utilization_pct", json!(55.5)),
        ("gpu_memory_used_mb", json!(2048)),
        ("stream_count", json!(1)),
        ("gpu_mismatch_sec", json!(12)),
        ("heads", json!([{"id": head, "name": "ipad-1", "status": "idle"}])),
    ] {
        assert_eq!(body_a[field], value, "{field} of {body_a}");
    }
    assert!(body_a["last_seen"].as_str().is_some_and(|t| t.ends_with('Z')), "{body_a}");
    let anomaly = &body_a["anomalies"][0];
    assert!(anomaly["since"].as_str().is_some_and(|t| t.ends_with('Z')), "{body_a}");
    assert!(anomaly["for_s"].as_u64().is_some(), "{body_a}");
    // A body that never sent telemetry has unknown figures, not zeros.
    let body_b = of(&b);
    for field in ["gpu_utilization_pct", "gpu_memory_used_mb", "stream_count", "gpu_mismatch_sec"] {
        assert_eq!(body_b[field], Value::Null, "{field} of {body_b}");
    }
    assert_eq!((&body_b["heads"], &body_b["anomalies"]), (&json!([]), &json!([])), "{body_b}");
    assert_eq!((&body_b["draining"], &body_b["node_status"]), (&json!(true), &json!("offline")), "{body_b}");

    // Filters and pages.
    for (query, want) in [
        ("district=south", vec![b.clone()]),
        ("district=north&venue=arena", vec![a.clone()]),
        ("venue=nowhere", vec![]),
        ("node_status=online&role=hydrabody", vec![a.clone()]),
    ] {
        let (status, found) = get(&s, &format!("/api/v1/bodies?{query}"), OBSERVER).await;
        assert_eq!(status, 200, "{query}: {found}");
        assert_eq!(ids(found.as_array().unwrap()), want, "{query}");
    }
    let (paged, pages) = all_pages(&s, "/api/v1/bodies", 1).await;
    assert_eq!((ids(&paged), pages), (want, 2));

    // Bad requests, no token, a node's token.
    refused_queries(
        &s,
        "/api/v1/bodies",
        &[
            ("limit=0", "5000"),
            ("limit=5001", "5000"),
            ("after=nonsense", "node-"),
            ("kind=head", "kind"),
            ("status=pending", "status"),
            ("as_of_seq=1", "as_of_seq"),
            ("colour=red", "colour"),
        ],
    )
    .await;
    assert_eq!(request(&s, Method::GET, "/api/v1/bodies", None, None).await.0, 401);
    assert_eq!(get(&s, "/api/v1/bodies", &a_token).await.0, 403);
    assert_eq!(request(&s, Method::GET, "/api/v1/body-anomalies", None, None).await.0, 401);
    assert_eq!(get(&s, "/api/v1/body-anomalies", &a_token).await.0, 403);

    // The CLI shows the same anomaly.
    let out = admin_cli(&s, &["anomalies"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains(&a) && printed.contains("body-a") && printed.contains("orphan_stream"),
        "{printed}"
    );
}
