//! The stored formats, pinned: the bytes of every event variant and of one snapshot per
//! views type (fixtures in `tests/fixtures/`), and the logs that schemas 1 and 2
//! wrote, read through the upcasters with the digests they had. Reordering variants, reshaping an
//! event without a new schema, or reshaping a view without a new `VERSION` fails here.
//! After a deliberate change (a new variant, schema or view version), write the new
//! fixtures with `HYDRA_BLESS=1 cargo test --test it formats` and check them in.

use hydra_events::{
    decode, encode, hash, Envelope, Event, ExecId, ExecResult, FailureThreshold, InlineOutput, NodeId,
    OutputRef, RolloutPolicy, SkippedNode, UpdateTarget, CURRENT_SCHEMA, FORMAT_V1, FORMAT_V2, ZERO_HASH,
};
use hydra_projections::{digest, encode_snapshot, ClusterViews, LibraryViews, Projection};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn node() -> NodeId {
    NodeId::parse("node-0123456789abcdef").unwrap()
}

fn exec() -> ExecId {
    ExecId::parse("exec-0123456789abcdef").unwrap()
}

fn output() -> ExecResult {
    ExecResult {
        exit_code: Some(-3),
        stdout: OutputRef { hash: [0x5a; 32], size: 3 },
        stderr: OutputRef { hash: [0xe4; 32], size: 300 },
        truncated: true,
        duration_ms: 42,
        inline: Some(InlineOutput { stdout: "out".into(), stderr: "err".into() }),
    }
}

/// One of every variant, in declaration order (variant index i at position i), each
/// field set so that its bytes show.
fn every_event() -> Vec<Event> {
    vec![
        Event::NodeEnrolled { node_id: node(), name: "name-0".into(), ip: "ip-0".into() },
        Event::NodeApproved {
            node_id: node(),
            roles: vec!["roles-1".into(), "b".into()],
            district: "district-1".into(),
            venue: "venue-1".into(),
            environment: "environment-1".into(),
            owner: Some("owner-1".into()),
        },
        Event::NodeRejected { node_id: node() },
        Event::NodeRemoved { node_id: node() },
        Event::NodeRolesChanged { node_id: node(), roles: vec!["roles-4".into(), "b".into()] },
        Event::NodePlacementChanged {
            node_id: node(),
            district: "district-5".into(),
            venue: "venue-5".into(),
            environment: "environment-5".into(),
            owner: Some("owner-5".into()),
        },
        Event::NodeDrainChanged { node_id: node(), draining: true },
        Event::NodeUpdateRequested { node_id: node(), target: UpdateTarget::Services },
        Event::NodeUpdateDelivered { node_id: node(), target: UpdateTarget::Services },
        Event::NodeOnline { node_id: node() },
        Event::NodeOffline { node_id: node(), last_seen_ms: 1010 },
        Event::NodeProviderChanged {
            node_id: node(),
            provider_status: Some("provider_status-11".into()),
            provider_version: Some("provider_version-11".into()),
        },
        Event::NodeAgentChanged {
            node_id: node(),
            agent_version: Some("agent_version-12".into()),
            os: Some("os-12".into()),
        },
        Event::NodeNetworkChanged { node_id: node(), wireguard_ip: Some("wireguard_ip-13".into()) },
        Event::NodeStreamChanged { node_id: node(), stream_status: "stream_status-14".into() },
        Event::ExecQueued {
            exec_id: exec(),
            node_id: node(),
            command: "command-15".into(),
            timeout_ms: 1015,
            retry_on_disconnect: true,
            deliver_by_ms: 1015,
        },
        Event::ExecDispatched { exec_id: exec(), node_id: node() },
        Event::ExecCompleted { exec_id: exec(), node_id: node(), output: output() },
        Event::ExecTimedOut { exec_id: exec(), node_id: node(), output: Some(output()), by: "by-18".into() },
        Event::ExecCancelled { exec_id: exec(), node_id: node(), was_dispatched: true },
        Event::ExecRequeued { exec_id: exec(), node_id: node(), reason: "reason-20".into() },
        Event::ExecFailed { exec_id: exec(), node_id: node(), reason: "reason-21".into() },
        Event::ExecExpired { exec_id: exec(), node_id: node() },
        Event::ShellOpened {
            session_id: "session_id-23".into(),
            node_id: node(),
            command: Some("command-23".into()),
        },
        Event::ShellClosed { session_id: "session_id-24".into(), node_id: node(), exit_code: Some(-3) },
        Event::HeadRegistered {
            node_id: node(),
            name: "name-25".into(),
            district: "district-25".into(),
            venue: "venue-25".into(),
        },
        Event::HeadStatusChanged {
            node_id: node(),
            status: "status-26".into(),
            detail: Some("detail-26".into()),
        },
        Event::HeadAssigned { node_id: node(), body_id: Some(node()), app_id: Some("app_id-27".into()) },
        Event::HeadExperiencesAllowed {
            node_id: node(),
            experiences: vec!["experiences-28".into(), "b".into()],
        },
        Event::ReprovisionRequested { node_id: node() },
        Event::ProvisionStarted { node_id: node() },
        Event::ProvisionCompleted { node_id: node(), version: Some("version-31".into()) },
        Event::ProvisionFailed { node_id: node(), error: "error-32".into() },
        Event::StreamStopped { node_id: node(), exec: "exec-33".into() },
        Event::AnomalyStarted { node_id: node(), kind: "kind-34".into() },
        Event::AnomalyCleared { node_id: node(), kind: "kind-35".into() },
        Event::ExperienceCreated {
            experience_id: "experience_id-36".into(),
            project: "project-36".into(),
            district: "district-36".into(),
            venues: vec!["venues-36".into(), "b".into()],
            auto_promote: true,
        },
        Event::BuildRegistered {
            experience_id: "experience_id-37".into(),
            build: "build-37".into(),
            version: "version-37".into(),
            artifact_url: "artifact_url-37".into(),
            sha256: "sha256-37".into(),
            release_event_id: Some("release_event_id-37".into()),
        },
        Event::ExperiencePromoted {
            experience_id: "experience_id-38".into(),
            environment: "environment-38".into(),
            build: "build-38".into(),
            version: "version-38".into(),
            rollout_id: Some("rollout_id-38".into()),
        },
        Event::RolloutStarted {
            rollout_id: "rollout_id-39".into(),
            experience_id: "experience_id-39".into(),
            environment: "environment-39".into(),
            build: "build-39".into(),
            version: "version-39".into(),
            district: "district-39".into(),
            venues: vec!["venues-39".into(), "b".into()],
            bodies: vec![node()],
            heads: vec![node()],
            skipped: vec![SkippedNode { node_id: node(), reason: "offline".into() }],
            policy: RolloutPolicy {
                max_parallel: 4,
                failure_threshold: FailureThreshold::Percent(10),
                node_deadline_ms: 60_000,
            },
            cluster_since: 1039,
        },
        Event::RolloutWaveStarted { rollout_id: "rollout_id-40".into(), wave: 40, nodes: vec![node()] },
        Event::RolloutNodeRequested { rollout_id: "rollout_id-41".into(), node_id: node(), wave: 41 },
        Event::RolloutNodeStarted { rollout_id: "rollout_id-42".into(), node_id: node(), cluster_seq: 1042 },
        Event::RolloutNodeCompleted {
            rollout_id: "rollout_id-43".into(),
            node_id: node(),
            version: Some("version-43".into()),
            cluster_seq: 1043,
        },
        Event::RolloutNodeFailed {
            rollout_id: "rollout_id-44".into(),
            node_id: node(),
            error: "error-44".into(),
            cluster_seq: Some(51),
        },
        Event::RolloutWaveCompleted {
            rollout_id: "rollout_id-45".into(),
            wave: 45,
            completed: 47,
            failed: 47,
        },
        Event::RolloutPaused { rollout_id: "rollout_id-46".into() },
        Event::RolloutResumed { rollout_id: "rollout_id-47".into() },
        Event::RolloutCompleted { rollout_id: "rollout_id-48".into(), state: "state-48".into(), failed: 50 },
        Event::RolloutAborted { rollout_id: "rollout_id-49".into(), reason: "reason-49".into() },
        Event::RolloutCancelled { rollout_id: "rollout_id-50".into() },
        Event::NodeKindChanged {
            node_id: node(),
            kind: "kind-51".into(),
            roles: vec!["roles-51".into(), "b".into()],
        },
        Event::HeadUnassigned { head_id: node(), body_id: node(), reason: "reason-52".into() },
        Event::RolloutOrigin {
            rollout_id: "rollout_id-53".into(),
            kind: "kind-53".into(),
            of_rollout: "of_rollout-53".into(),
        },
        Event::NodeImported {
            node_id: node(),
            kind: "head".into(),
            name: "name-54".into(),
            ip: "ip-54".into(),
            status: "approved".into(),
            roles: vec!["roles-54".into()],
            district: "district-54".into(),
            venue: "venue-54".into(),
            environment: "production".into(),
            owner: Some("owner-54".into()),
            draining: true,
            assigned_body: Some(node()),
            app_id: Some("app-54".into()),
            allowed_experiences: vec!["exp-54".into()],
        },
        Event::SessionStarted { session_id: "session_id-55".into(), head_id: node(), body_id: node() },
        Event::SessionEnded {
            session_id: "session_id-56".into(),
            head_id: node(),
            body_id: node(),
            reason: "reason-56".into(),
        },
        Event::NodeRekeyKeyRegistered { node_id: node(), public_key: "public_key-57".into() },
        Event::NodeTokenRotated { node_id: node(), rekey_id: "rekey_id-58".into(), claim: true },
        Event::NodeRekeyed { node_id: node(), rekey_id: "rekey_id-59".into() },
    ]
}

fn envelope(seq: u64, event: Event) -> Envelope {
    let seq_byte = u8::try_from(seq % 256).unwrap();
    Envelope {
        seq,
        at_ms: 1_700_000_000_000 + seq,
        schema: CURRENT_SCHEMA,
        cause: "admin:golden".into(),
        prev_hash: [seq_byte; 32],
        event,
    }
}

/// `actual` against the checked-in fixture `name` (or written to it, with HYDRA_BLESS).
fn golden(name: &str, actual: &str, what_to_do: &str) {
    let path = format!("{FIXTURES}/{name}");
    if std::env::var_os("HYDRA_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("{path} is missing: {what_to_do}, then HYDRA_BLESS=1 cargo test --test it formats")
    });
    for (line, (e, a)) in expected.lines().zip(actual.lines()).enumerate() {
        assert_eq!(e, a, "{name} line {}: the stored format changed; {what_to_do}", line + 1);
    }
    assert_eq!(expected.lines().count(), actual.lines().count(), "{name}: {what_to_do}");
}

#[test]
fn the_list_of_type_names_has_every_variant_in_order() {
    let names: Vec<&str> = every_event().iter().map(Event::type_name).collect();
    assert_eq!(Event::TYPES, names.as_slice());
}

#[test]
fn every_event_variant_encodes_to_its_pinned_bytes() {
    let events = every_event();
    let mut text = String::new();
    for (i, event) in events.iter().enumerate() {
        let variant = bincode::serde::encode_to_vec(event, bincode::config::standard()).unwrap()[0];
        assert_eq!(
            usize::from(variant),
            i,
            "{} is sample {i}: samples follow the declaration order",
            event.type_name()
        );
        let e = envelope(i as u64 + 1, event.clone());
        let bytes = encode(&e);
        assert_eq!(decode(&bytes).unwrap(), e, "{} round-trips", event.type_name());
        text.push_str(&format!("{} {}\n", event.type_name(), hex::encode(&bytes)));
    }
    // No variant past the samples: the next index does not decode as an event.
    let past = u8::try_from(events.len()).unwrap();
    let decoded: Result<(Event, usize), _> =
        bincode::serde::decode_from_slice(&[past, 0, 0, 0], bincode::config::standard());
    assert!(
        decoded.is_err(),
        "Event has a variant past the {} samples: add one to every_event",
        events.len()
    );
    golden(
        &format!("events-schema-{CURRENT_SCHEMA}.txt"),
        &text,
        "a new variant goes at the end with a sample; a changed one needs a new CURRENT_SCHEMA and its old shape frozen in events/src/vN.rs",
    );
}

/// The views folded from every sample event, as a snapshot stores them.
fn snapshot_hex<P: Projection>() -> String {
    let views: P = hydra_projections::fold(every_event());
    hex::encode(encode_snapshot(&views)) + "\n"
}

#[test]
fn each_views_type_snapshots_to_its_pinned_bytes() {
    let bump = "the views changed shape: bump their Projection::VERSION (older snapshots are then rebuilt from the log)";
    golden(&format!("cluster-views-v{}.hex", ClusterViews::VERSION), &snapshot_hex::<ClusterViews>(), bump);
    golden(&format!("library-views-v{}.hex", LibraryViews::VERSION), &snapshot_hex::<LibraryViews>(), bump);
}

/// The records of a checked-in log: each a u32 length (little endian), then its bytes.
pub fn log_records(name: &str) -> Vec<Vec<u8>> {
    let data = std::fs::read(format!("{FIXTURES}/{name}")).unwrap();
    let mut records = Vec::new();
    let mut rest = data.as_slice();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        records.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    assert!(rest.is_empty(), "{name} ends inside a record");
    records
}

/// A checked-in log of `schema`, read through today's decoder: each record starts with
/// `header`, decodes, chains to the one before and re-encodes to its own bytes; the
/// events, and the views and digest line they replay to.
fn read_log(name: &str, header: &[u8], schema: u16) -> (Vec<Event>, String) {
    let mut views = ClusterViews::default();
    let mut prev = ZERO_HASH;
    let mut events = Vec::new();
    for (i, bytes) in log_records(name).iter().enumerate() {
        let n = i + 1;
        assert_eq!(&bytes[..header.len()], header, "record {n} was written by schema {schema}");
        let e = decode(bytes).unwrap_or_else(|err| panic!("record {n} does not decode: {err}"));
        assert_eq!((e.seq, e.schema, e.prev_hash), (n as u64, schema, prev), "record {n} chains");
        assert!(hydra_events::is_canonical(&e, bytes), "record {n} re-encodes as schema {schema} wrote it");
        prev = hash(bytes);
        views.apply(&e);
        events.push(e.event);
    }
    (events, format!("{} {}\n", views.last_seq(), digest(&views)))
}

/// The digest line (`seq digest`) the checked-in log `log` replays to with today's
/// cluster views: the digest covers the views' shape, so each views version has its
/// own file (`cluster-log-v1.views-v6.digest`; the files without a version are view
/// version 5's). Written with HYDRA_BLESS after a views change, like the snapshots.
pub fn log_digest(log: &str) -> String {
    let name = format!("{log}.views-v{}.digest", ClusterViews::VERSION);
    std::fs::read_to_string(format!("{FIXTURES}/{name}"))
        .unwrap_or_else(|_| panic!("{name} is missing: HYDRA_BLESS=1 cargo test --test it formats"))
}

/// `digest_line` against the pinned digest of `log` (or written to it, with HYDRA_BLESS).
fn check_log_digest(log: &str, digest_line: &str) {
    let name = format!("{log}.views-v{}.digest", ClusterViews::VERSION);
    golden(&name, digest_line, "the log replays to other views: a views change bumps their VERSION");
}

#[test]
fn a_log_written_by_schema_1_reads_through_the_upcaster_with_the_digest_it_had() {
    let (events, digest_line) = read_log("cluster-log-v1.bin", &[FORMAT_V1], 1);
    // Schema 1 approved without an owner and placed the owner in the next event.
    let approvals: Vec<_> = events.iter().filter(|e| matches!(e, Event::NodeApproved { .. })).collect();
    assert!(matches!(approvals.as_slice(), [Event::NodeApproved { owner: None, .. }]), "{approvals:?}");
    let owners: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::NodePlacementChanged { owner, .. } => owner.as_deref(),
            _ => None,
        })
        .collect();
    assert_eq!(owners, ["ops"], "the owner came through");
    check_log_digest("cluster-log-v1", &digest_line);
}

#[test]
fn a_log_written_by_schema_2_reads_through_the_upcaster_with_its_output_inline() {
    let (events, digest_line) = read_log("cluster-log-v2.bin", &[FORMAT_V2, 2, 0], 2);
    let results: Vec<_> = events
        .into_iter()
        .filter_map(|e| match e {
            Event::ExecCompleted { output, .. } | Event::ExecTimedOut { output: Some(output), .. } => {
                Some(output)
            }
            _ => None,
        })
        .collect();
    // Schema 2 held the output in the event: the upcast keeps it there (`inline`) and
    // computes the references a schema-3 event would carry.
    let [done, timed_out] = results.as_slice() else { panic!("{results:?}") };
    let inline = done.inline.as_ref().unwrap();
    assert_eq!((inline.stdout.as_str(), inline.stderr.as_str()), ("schema-2 stdout\n", "schema-2 stderr\n"));
    assert_eq!(done.stdout, OutputRef::of(b"schema-2 stdout\n"));
    assert_eq!((done.exit_code, done.stdout.size), (Some(0), 16));
    assert_eq!(timed_out.inline.as_ref().unwrap().stdout, "partial\n");
    assert!(timed_out.truncated && timed_out.exit_code.is_none());
    check_log_digest("cluster-log-v2", &digest_line);
}

/// The pinned records of schema 2 (one per variant) still decode, each re-encoding to
/// its bytes as schema 2 wrote them, and every variant but the two reshaped exec
/// results decodes to the same event as today's sample.
#[test]
fn every_schema_2_record_still_decodes() {
    let text = std::fs::read_to_string(format!("{FIXTURES}/events-schema-2.txt")).unwrap();
    let samples = every_event();
    for (line, sample) in text.lines().zip(&samples) {
        let (name, hex_bytes) = line.split_once(' ').unwrap();
        let bytes = hex::decode(hex_bytes).unwrap();
        let e = decode(&bytes).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!((e.schema, e.event.type_name()), (2, name));
        assert!(hydra_events::is_canonical(&e, &bytes), "{name} re-encodes as schema 2 wrote it");
        if !matches!(sample, Event::ExecCompleted { .. } | Event::ExecTimedOut { .. }) {
            assert_eq!(&e.event, sample, "{name}");
        }
    }
    // Schema 2 knew the variants up to `node.imported`; later ones came without a new
    // schema (appended variants need none).
    assert!(text.lines().count() <= samples.len());
}
