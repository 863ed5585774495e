//! End to end: `GET /metrics` of both services, parsed with a Prometheus text parser
//! after a scripted run (nodes enrolled and approved, heartbeats, commands completing
//! and timing out, an SSE subscriber, 404s; a rollout on the library), who may read
//! it, `metrics_listen`, and that the example dashboard and alert rules only name
//! series the services expose.

use crate::common::library::spawn_library;
use crate::common::*;
use futures_util::StreamExt;
use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::PrometheusValue;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// One series of a scrape, as Prometheus stores it: a histogram is its `_bucket`,
/// `_sum` and `_count` series.
#[derive(Debug)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A scrape, parsed: its families (by the name `# TYPE` gives) and its series.
struct Scrape {
    families: BTreeSet<String>,
    series: Vec<Series>,
}

/// `/metrics` read with `token` and parsed.
async fn scrape(s: &impl Service, token: &str) -> Scrape {
    let resp = s.http().get(format!("{}/metrics", s.url())).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    parse(&resp.text().await.unwrap())
}

/// Parses the Prometheus text format strictly: anything the format does not allow is
/// a failure, not a skipped line.
fn parse(text: &str) -> Scrape {
    let exposition =
        parse_prometheus(text).unwrap_or_else(|e| panic!("not the Prometheus text format: {e:?}\n{text}"));
    let mut series = Vec::new();
    for (name, family) in &exposition.families {
        for sample in family.iter_samples() {
            let labels: BTreeMap<String, String> =
                sample.get_labelset().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let mut push = |name: String, labels: BTreeMap<String, String>, value: f64| {
                series.push(Series { name, labels, value })
            };
            match &sample.value {
                PrometheusValue::Counter(c) => push(name.clone(), labels, c.value.as_f64()),
                PrometheusValue::Gauge(v) | PrometheusValue::Unknown(v) => {
                    push(name.clone(), labels, v.as_f64())
                }
                PrometheusValue::Histogram(h) => {
                    for b in &h.buckets {
                        let mut with_le = labels.clone();
                        with_le.insert("le".into(), b.upper_bound.to_string());
                        push(format!("{name}_bucket"), with_le, b.count.as_f64());
                    }
                    push(format!("{name}_sum"), labels.clone(), h.sum.map_or(f64::NAN, |s| s.as_f64()));
                    push(format!("{name}_count"), labels, h.count.map_or(f64::NAN, |c| c as f64));
                }
                PrometheusValue::Summary(_) => panic!("{name}: Hydra exposes no summaries"),
            }
        }
    }
    Scrape { families: exposition.families.keys().cloned().collect(), series }
}

fn matches(series: &Series, name: &str, labels: &[(&str, &str)]) -> bool {
    series.name == name && labels.iter().all(|(k, v)| series.labels.get(*k).map(String::as_str) == Some(*v))
}

/// The one value of the series `name{labels}` (labels not named may be anything, but
/// only one series may match).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = scrape.series.iter().filter(|s| matches(s, name, labels)).collect();
    assert_eq!(found.len(), 1, "one series {name}{labels:?}: {found:?}");
    found[0].value
}

/// The sum over every series of `name` matching `labels`.
fn total(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape.series.iter().filter(|s| matches(s, name, labels)).map(|s| s.value).sum()
}

/// Observations of the histogram `name{labels}`.
fn observations(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(scrape, &format!("{name}_count"), labels)
}

/// Every name a scrape shows: its families and its series.
fn names(scrape: &Scrape) -> BTreeSet<String> {
    scrape.families.iter().cloned().chain(scrape.series.iter().map(|s| s.name.clone())).collect()
}

#[tokio::test]
async fn a_scripted_run_shows_in_the_cluster_metrics() {
    let (s, node, token) = app_with_body(|c| {
        c.exec_timeout_grace = Duration::from_millis(200);
        c.exec_watchdog_interval = Duration::from_millis(50);
    })
    .await;
    let (pending, _) = enroll(&s, "pending-1").await;
    for _ in 0..3 {
        assert_eq!(heartbeat(&s, &token, json!({"provider_status": "running"})).await.0, 200);
    }
    // A live subscriber for the whole run, so the exec events reach it live.
    let stream = s.http().get(format!("{}/api/v1/events?since=0", s.url())).bearer_auth(OBSERVER).send();
    let mut stream = stream.await.unwrap().bytes_stream();
    assert!(eventually(GUARD, || async { sse_subscribers(&s).await == 1 }).await);

    // One command completes, one times out on the watchdog.
    let done = answer_one_command(&s, &token, json!({"exit_code": 0, "stdout": "ok\n"}));
    let (status, _) =
        post(&s, &format!("/api/v1/nodes/{node}/exec"), ADMIN, json!({"command": "true"})).await;
    assert_eq!(status, 202);
    done.await.unwrap();
    let (_, hung) =
        post(&s, &format!("/api/v1/nodes/{node}/exec"), ADMIN, json!({"command": "hang", "timeout": 1}))
            .await;
    let hung = hung["id"].as_str().unwrap().to_owned();
    assert_eq!(get(&s, "/api/v1/body/exec?wait=0", &token).await.0, 200);
    let result = format!("/api/v1/nodes/{node}/exec/{hung}/result");
    assert!(eventually(GUARD, || async { get(&s, &result, ADMIN).await.1["status"] == "timed_out" }).await);
    // The subscriber has every exec event once it has the last one (and stays open).
    let mut seen = String::new();
    while !seen.contains("event: exec.timed_out") {
        let chunk = tokio::time::timeout(GUARD, stream.next()).await.expect("the stream goes on");
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("the stream is open").unwrap()));
    }

    // 404s: two paths no route has, one node no one has.
    assert_eq!(get(&s, "/api/v1/nope", ADMIN).await.0, 404);
    assert_eq!(get(&s, "/api/v1/nope/again", ADMIN).await.0, 404);
    assert_eq!(get(&s, "/api/v1/nodes/node-00000000000000ff", ADMIN).await.0, 404);

    let m = scrape(&s, OBSERVER).await;
    assert_eq!(value(&m, "hydra_exec_results_total", &[("status", "completed")]), 1.0);
    assert_eq!(value(&m, "hydra_exec_results_total", &[("status", "timed_out")]), 1.0);
    assert_eq!(value(&m, "hydra_exec_results_total", &[("status", "failed")]), 0.0);
    assert_eq!(value(&m, "hydra_exec_watchdog_timeouts_total", &[]), 1.0);
    assert_eq!(observations(&m, "hydra_exec_dispatch_latency_seconds", &[]), 2.0);
    assert_eq!(total(&m, "hydra_exec_commands", &[]), 0.0, "nothing left queued or in flight");
    assert_eq!(value(&m, "hydra_heartbeats_total", &[]), 3.0);
    let nodes = |status, liveness| {
        value(&m, "hydra_nodes", &[("kind", "body"), ("status", status), ("liveness", liveness)])
    };
    assert_eq!(nodes("approved", "online"), 1.0);
    assert_eq!(nodes("pending", "offline"), 1.0);
    assert_eq!(nodes("approved", "offline"), 0.0);
    assert_eq!(total(&m, "hydra_nodes", &[]), 2.0);
    assert_eq!(value(&m, "hydra_node_providers", &[("state", "running")]), 1.0);
    assert_eq!(value(&m, "hydra_node_transitions_total", &[("to", "online")]), 1.0);
    // The ledger: every event counted by type, once.
    let events = value(&m, "hydra_ledger_committed_seq", &[]);
    assert_eq!(total(&m, "hydra_ledger_events_total", &[]), events);
    assert_eq!(value(&m, "hydra_ledger_events_total", &[("type", "exec.completed")]), 1.0);
    assert_eq!(value(&m, "hydra_ledger_events_total", &[("type", "node.enrolled")]), 2.0);
    assert!(value(&m, "hydra_ledger_commands_total", &[("outcome", "appended")]) >= 6.0);
    let flushes = observations(&m, "hydra_ledger_batch_commands", &[]);
    assert!(flushes >= 1.0 && flushes <= events);
    assert_eq!(observations(&m, "hydra_ledger_fsync_duration_seconds", &[]), flushes, "one fsync per batch");
    assert_eq!(observations(&m, "hydra_ledger_commit_duration_seconds", &[]), flushes);
    assert_eq!(value(&m, "hydra_ledger_read_only", &[]), 0.0);
    // SSE: the subscriber is counted and got the exec events live.
    assert_eq!(value(&m, "hydra_sse_subscribers", &[]), 1.0);
    // Live: queued, dispatched and ended, for each command (what came before it
    // subscribed was read from the log, which is not a live delivery).
    assert_eq!(observations(&m, "hydra_sse_delivery_lag_seconds", &[]), 6.0);
    // HTTP: by route template and status, never the id in the path.
    let requests = |route, status| {
        value(&m, "hydra_http_requests_total", &[("route", route), ("method", "GET"), ("status", status)])
    };
    assert_eq!(requests("unmatched", "404"), 2.0);
    assert_eq!(requests("/api/v1/nodes/{id}", "404"), 1.0);
    assert_eq!(
        value(&m, "hydra_http_requests_total", &[("route", "/api/v1/body/heartbeat"), ("status", "200")]),
        3.0
    );
    assert!(
        observations(&m, "hydra_http_request_duration_seconds", &[("route", "/api/v1/nodes/{id}/exec")])
            >= 2.0
    );
    // The store and the process.
    assert!(value(&m, "hydra_store_bytes", &[]) > 0.0);
    assert!(value(&m, "hydra_process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&m, "hydra_process_open_fds", &[]) >= 3.0);
    // Bounded labels: no node or command id anywhere.
    for series in &m.series {
        for id in [node.as_str(), pending.as_str(), hung.as_str()] {
            assert!(!series.labels.values().any(|v| v.contains(id)), "{series:?} carries an id");
        }
    }
    let families: BTreeSet<_> = m.families.iter().filter(|n| n.starts_with("hydra_")).collect();
    assert!(families.len() >= 20, "{families:?}");

    drop(stream);
    assert!(
        eventually(GUARD, || async { value(&scrape(&s, ADMIN).await, "hydra_sse_subscribers", &[]) == 0.0 })
            .await
    );
}

#[tokio::test]
async fn metrics_need_an_observer_or_admin_token() {
    let (s, _, node_token) = app_with_body(|_| {}).await;
    scrape(&s, OBSERVER).await;
    scrape(&s, ADMIN).await;
    let (status, v) = get(&s, "/metrics", &node_token).await;
    assert_eq!((status, v["error"].as_str()), (403, Some("this token may not read fleet views")));
    let (status, v) = request(&s, reqwest::Method::GET, "/metrics", None, None).await;
    assert_eq!((status, v["error"].as_str()), (401, Some("missing or invalid token")));
}

#[tokio::test]
async fn metrics_listen_serves_metrics_without_a_token_and_nothing_else() {
    let s = spawn_app_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let open = s.running.as_ref().unwrap().metrics_addr.expect("metrics_listen is bound");
    let url = format!("http://{open}");
    let resp = s.http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let m = parse(&resp.text().await.unwrap());
    assert_eq!(total(&m, "hydra_nodes", &[]), 0.0);
    assert!(m.families.contains("hydra_ledger_events_total"), "{:?}", m.families);
    let (status, v) =
        call(&s.http, reqwest::Method::GET, &format!("{url}/api/v1/nodes"), Some(ADMIN), None).await;
    assert_eq!((status, v["error"].as_str()), (404, Some("only /metrics is served on this address")));
    // The main listener still wants a token.
    assert_eq!(request(&s, reqwest::Method::GET, "/metrics", None, None).await.0, 401);
}

#[tokio::test]
async fn a_metrics_listen_address_in_use_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap();
    let refused = serve_dir(tempfile::tempdir().unwrap(), |c| c.metrics_listen = Some(at)).await;
    let error = format!("{:#}", refused.err().expect("the start is refused"));
    assert!(error.contains(&format!("binding metrics_listen {at}")), "{error}");
    let refused = hydra::library::server::start(hydra::library::config::LibraryConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data: tempfile::tempdir().unwrap().path().to_owned(),
        metrics_listen: Some(at),
        ..Default::default()
    })
    .await;
    let error = format!("{:#}", refused.err().expect("the library's start is refused"));
    assert!(error.contains(&format!("binding metrics_listen {at}")), "{error}");
}

#[tokio::test]
async fn the_library_counts_its_rollouts_and_their_nodes() {
    let cluster = crate::library_api::fake_cluster().await;
    let lib = spawn_library(|c| c.cluster_url = Some(cluster)).await;
    let body =
        json!({"id": "space", "project": "p", "district": "d1", "venues": ["v1"], "auto_promote": false});
    assert_eq!(post(&lib, "/api/v1/experiences", ADMIN, body).await.0, 201);
    let build = json!({"build": "b1", "version": "1.0", "artifact_url": "https://a.example/b1.zip", "sha256": "ab".repeat(32)});
    assert_eq!(post(&lib, "/api/v1/experiences/space/builds", ADMIN, build).await.0, 201);
    let promote = json!({"to": "staging", "max_parallel": 1, "node_deadline": "10m"});
    let (status, p) = post(&lib, "/api/v1/experiences/space/promote", ADMIN, promote).await;
    assert_eq!(status, 201, "{p}");

    // The driver asks for one node at a time; the stand-in never reports progress.
    let asked = eventually(GUARD, || async {
        value(&scrape(&lib, OBSERVER).await, "hydra_rollout_nodes", &[("state", "requested")]) == 1.0
    })
    .await;
    assert!(asked);
    let m = scrape(&lib, OBSERVER).await;
    assert_eq!(value(&m, "hydra_rollouts", &[("state", "running")]), 1.0);
    assert_eq!(value(&m, "hydra_rollout_nodes", &[("state", "pending")]), 2.0, "two bodies and a head");
    assert_eq!(value(&m, "hydra_ledger_events_total", &[("type", "rollout.started")]), 1.0);
    assert_eq!(
        value(
            &m,
            "hydra_http_requests_total",
            &[("route", "/api/v1/experiences/{id}/promote"), ("status", "201")]
        ),
        1.0
    );

    let (status, _) =
        request(&lib, reqwest::Method::POST, "/api/v1/rollouts/r1/cancel", Some(ADMIN), None).await;
    assert_eq!(status, 200);
    let m = scrape(&lib, OBSERVER).await;
    assert_eq!(value(&m, "hydra_rollouts", &[("state", "running")]), 0.0);
    assert_eq!(value(&m, "hydra_rollouts", &[("state", "cancelled")]), 1.0);
    assert_eq!(total(&m, "hydra_rollout_nodes", &[]), 0.0, "no rollout is open");
    assert!(!names(&m).iter().any(|n| n.starts_with("hydra_nodes")), "fleet families are hydracluster's");
}

/// Every `hydra_…` name in the example dashboard and alert rules is one that a scrape
/// of hydracluster or the library shows, so neither can drift from the code.
#[tokio::test]
async fn the_dashboard_and_alert_rules_name_only_exposed_series() {
    let (s, _, token) = app_with_body(|_| {}).await;
    heartbeat(&s, &token, json!({})).await;
    let lib = spawn_library(|_| {}).await;
    let mut exposed = names(&scrape(&s, ADMIN).await);
    exposed.extend(names(&scrape(&lib, ADMIN).await));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["docs/grafana/hydra.json", "docs/prometheus/alerts.yml", "docs/metrics.md"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let named = hydra_names(&text);
        assert!(named.len() >= 5, "{file} names the metrics it uses");
        let unknown: Vec<_> = named.iter().filter(|n| !exposed.contains(*n)).collect();
        assert!(unknown.is_empty(), "{file} names series /metrics does not expose: {unknown:?}");
    }
}

/// The `hydra_…` identifiers in a text.
fn hydra_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("hydra_") {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        if end > "hydra_".len() && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            out.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}
