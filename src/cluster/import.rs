//! Import of a live fleet (`hydracluster import`): a YAML file of nodes with the field
//! names of `GET /api/v1/nodes`, read with every problem named by its line, and the one
//! ledger command that brings its nodes in (`node.imported`, each token's hash in the
//! same flush) or writes nothing. The server's endpoint and the offline `--data` path
//! both go through `run`.

use super::heads::MAX_EXPERIENCES;
use super::nodes::{fleet_environment, kind_for, machine_name, RoleRules};
use hydra_core::auth::{hash_token, node_principal, TokenHash};
use hydra_core::error::DomainError;
use hydra_core::ledger::{Decision, Ledger, LedgerError};
use hydra_core::names::{first_of_each, label, outside_id};
use hydra_core::store::{Store, StoreError, TokenWrite};
use hydra_events::{Event, NodeId};
use hydra_projections::{ClusterViews, HeadView, NodeKind, NodeStatus, NodeView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use yaml_rust2::parser::{Event as YamlEvent, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};
use yaml_rust2::Yaml;

/// Something wrong with the file, at a line (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub line: usize,
    pub message: String,
}

impl Problem {
    fn new(line: usize, message: impl Into<String>) -> Problem {
        Problem { line, message: message.into() }
    }
}

/// The most problems one answer lists; a file wrong throughout says how many more.
const MAX_PROBLEMS: usize = 500;

/// The fields a node may have: those an admin sets on `GET /api/v1/nodes` (and a
/// head's on `GET /api/v1/heads`), and its token.
pub const FIELDS: [&str; 16] = [
    "id",
    "kind",
    "name",
    "ip",
    "roles",
    "district",
    "venue",
    "environment",
    "owner",
    "status",
    "draining",
    "assigned_body_id",
    "app_id",
    "allowed_experiences",
    "token",
    "token_sha256",
];

/// What the node list shows that the agents report (or the server derives): accepted,
/// so that a saved node list can be imported as it is, and ignored.
pub const REPORTED: [&str; 20] = [
    "node_status",
    "last_seen",
    "provider_status",
    "provider_version",
    "agent_version",
    "os",
    "wireguard_ip",
    "stream_status",
    "reprovision",
    "provision_state",
    "provisioning",
    "update_node",
    "update_services",
    "enrolled_at",
    "diagnostics",
    "telemetry",
    "coalesced_changes",
    "change_held",
    "assigned_body_name",
    "detail",
];

/// One node of the file, checked: the `node.imported` it makes, the node (and head)
/// it says, as replay will fold them, and its token's hash.
#[derive(Clone, PartialEq)]
pub struct ImportNode {
    /// Where the node starts in the file.
    pub line: usize,
    pub id: NodeId,
    pub event: Event,
    pub node: NodeView,
    pub head: Option<HeadView>,
    /// The line naming a head's body.
    pub body_line: usize,
    /// None only for a rejected node (its token was revoked with the rejection).
    pub token: Option<TokenHash>,
}

/// Never the token's hash, which stays out of logs and messages.
impl std::fmt::Debug for ImportNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportNode")
            .field("line", &self.line)
            .field("event", &self.event)
            .field("has_token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

// The YAML, as a tree that keeps the line of every value: serde_yaml's values have none.

/// A YAML value and the line it starts on.
#[derive(Debug)]
struct Node {
    line: usize,
    value: Value,
}

#[derive(Debug)]
enum Value {
    /// `plain` when unquoted and untagged: then `true`, `12` and `~` are not text.
    Scalar {
        text: String,
        plain: bool,
    },
    List(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

/// Deeper than the format ever goes (file, nodes, node, list): refused before it is
/// built, so that no input makes a tree deep enough to matter.
const MAX_DEPTH: usize = 8;

/// More values than a node file of `max_import_bytes` ever holds (about 15 a node):
/// past it the file is refused before its tree grows further.
const MAX_VALUES: usize = 1_000_000;

/// Fields in one node, and items in one list, at most (a head's whitelist is the
/// longest list).
const MAX_FIELDS: usize = 64;
const MAX_ITEMS: usize = MAX_EXPERIENCES;

/// Builds the tree from the parser's marked events.
#[derive(Default)]
struct Builder {
    values: usize,
    /// Open lists and maps: their line, whether a map, and their items so far.
    open: Vec<(usize, bool, Vec<Node>)>,
    documents: Vec<Node>,
    problems: Vec<Problem>,
    stopped: bool,
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: YamlEvent, mark: Marker) {
        if self.stopped {
            return;
        }
        let line = mark.line();
        self.values += 1;
        if self.values > MAX_VALUES || self.problems.len() >= MAX_PROBLEMS {
            let why = format!("more than {MAX_VALUES} values or {MAX_PROBLEMS} problems: split the file");
            self.problems.push(Problem::new(line, why));
            self.stopped = true;
            return;
        }
        let node = match event {
            YamlEvent::Scalar(text, style, _, tag) => Node {
                line,
                value: Value::Scalar { text, plain: style == TScalarStyle::Plain && tag.is_none() },
            },
            YamlEvent::Alias(_) => {
                self.problems
                    .push(Problem::new(line, "aliases (*name) are not read here: write the value out"));
                Node { line, value: Value::Scalar { text: String::new(), plain: true } }
            }
            YamlEvent::SequenceStart(..) | YamlEvent::MappingStart(..) => {
                if self.open.len() >= MAX_DEPTH {
                    self.problems.push(Problem::new(line, "nested deeper than a node file ever is"));
                    self.stopped = true;
                    return;
                }
                self.open.push((line, matches!(event, YamlEvent::MappingStart(..)), Vec::new()));
                return;
            }
            YamlEvent::SequenceEnd | YamlEvent::MappingEnd => {
                let Some((line, is_map, items)) = self.open.pop() else { return };
                let value = if is_map {
                    let mut items = items.into_iter();
                    let mut pairs = Vec::new();
                    while let (Some(k), Some(v)) = (items.next(), items.next()) {
                        pairs.push((k, v));
                    }
                    Value::Map(pairs)
                } else {
                    Value::List(items)
                };
                Node { line, value }
            }
            _ => return,
        };
        match self.open.last_mut() {
            Some((_, _, items)) => items.push(node),
            None => self.documents.push(node),
        }
    }
}

/// The file's one YAML document as a tree with lines.
fn read_yaml(text: &str) -> Result<Node, Vec<Problem>> {
    let mut builder = Builder::default();
    let loaded = Parser::new_from_str(text).load(&mut builder, true);
    if builder.stopped {
        return Err(builder.problems);
    }
    if let Err(e) = loaded {
        return Err(vec![Problem::new(e.marker().line(), format!("not valid YAML: {}", e.info()))]);
    }
    if !builder.problems.is_empty() {
        return Err(builder.problems);
    }
    let mut documents = builder.documents.into_iter();
    match (documents.next(), documents.next()) {
        (None, _) => Err(vec![Problem::new(1, "the file is empty: it lists no nodes")]),
        (Some(_), Some(second)) => {
            Err(vec![Problem::new(second.line, "a second YAML document: the nodes go in one document")])
        }
        (Some(root), None) => Ok(root),
    }
}

/// What a plain scalar is when it is not text, for a type error (never its value: it
/// may be a token).
fn not_text(text: &str) -> Option<&'static str> {
    match Yaml::from_str(text) {
        Yaml::String(_) => None,
        Yaml::Null => Some("nothing"),
        Yaml::Boolean(_) => Some("true or false"),
        _ => Some("a number"),
    }
}

/// A scalar's text; `None` for an empty value (`~`, `null` or nothing).
fn scalar(node: &Node) -> Result<Option<&str>, String> {
    match &node.value {
        Value::Scalar { text, plain: true } => match not_text(text) {
            None => Ok(Some(text)),
            Some("nothing") => Ok(None),
            Some(found) => Err(format!("expected text, found {found} (quote it to make it text)")),
        },
        Value::Scalar { text, plain: false } => Ok(Some(text)),
        Value::List(_) => Err("expected text, found a list".into()),
        Value::Map(_) => Err("expected text, found a map".into()),
    }
}

/// One node's fields, and the problems found in them.
struct Fields<'a> {
    /// The node's id as written (or its position), to say which node a problem is in.
    who: String,
    line: usize,
    map: HashMap<&'static str, &'a Node>,
    problems: Vec<Problem>,
}

impl Fields<'_> {
    /// Where field `f` is, else where the node starts.
    fn line(&self, f: &str) -> usize {
        self.map.get(f).map_or(self.line, |n| n.line)
    }

    fn problem(&mut self, f: &str, message: impl std::fmt::Display) {
        let line = self.line(f);
        self.problems.push(Problem::new(line, format!("{}: {message}", self.who)));
    }

    fn given(&self, f: &str) -> bool {
        self.map.get(f).is_some_and(|n| !matches!(scalar(n), Ok(None)))
    }

    /// Field `f` as text; `None` when absent, empty or of another type (a problem then).
    fn text(&mut self, f: &str) -> Option<String> {
        let node = self.map.get(f)?;
        match scalar(node) {
            Ok(text) => text.map(str::to_owned),
            Err(e) => {
                self.problem(f, format!("{f}: {e}"));
                None
            }
        }
    }

    /// Field `f` as a list of texts (empty when absent).
    fn list(&mut self, f: &str) -> Vec<String> {
        let Some(node) = self.map.get(f) else { return Vec::new() };
        let items = match &node.value {
            Value::List(items) if items.len() > MAX_ITEMS => {
                self.problem(f, format!("{f}: at most {MAX_ITEMS} items"));
                return Vec::new();
            }
            Value::List(items) => items,
            _ if matches!(scalar(node), Ok(None)) => return Vec::new(),
            _ => {
                self.problem(f, format!("{f}: expected a list, like [a, b]"));
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match scalar(item) {
                Ok(Some(text)) => out.push(text.to_owned()),
                Ok(None) => self.problem(f, format!("{f}: an empty item")),
                Err(e) => self.problem(f, format!("{f}: {e}")),
            }
        }
        out
    }

    fn flag(&mut self, f: &str) -> bool {
        let Some(node) = self.map.get(f) else { return false };
        if let Value::Scalar { text, plain: true } = &node.value {
            match Yaml::from_str(text) {
                Yaml::Boolean(b) => return b,
                Yaml::Null => return false,
                _ => {}
            }
        }
        self.problem(f, format!("{f}: expected true or false"));
        false
    }

    /// A domain check on field `f`: its refusal becomes a problem at the field's line.
    fn check<T>(&mut self, f: &str, checked: Result<T, DomainError>) -> Option<T> {
        checked.map_err(|e| self.problem(f, e)).ok()
    }
}

/// What the node file must satisfy beyond each field: the roles, and the tokens the
/// server already gives to others (admin, observer, fleet).
pub struct Rules<'a> {
    pub roles: &'a RoleRules,
    pub reserved: &'a (dyn Fn(&TokenHash) -> bool + Sync),
}

/// Reads and checks a node file: every node, or every problem (sorted by line).
pub fn parse(text: &str, rules: &Rules<'_>) -> Result<Vec<ImportNode>, Vec<Problem>> {
    let root = read_yaml(text)?;
    let mut problems = Vec::new();
    let items: &[Node] = match &root.value {
        Value::List(items) => items,
        Value::Map(pairs) => {
            let mut nodes = None;
            for (k, v) in pairs {
                match scalar(k) {
                    Ok(Some("nodes")) => nodes = Some(v),
                    _ => problems.push(Problem::new(
                        k.line,
                        "unknown top-level key: a node file is a list of nodes, or a map with `nodes:`",
                    )),
                }
            }
            match nodes.map(|n| (n.line, &n.value)) {
                Some((_, Value::List(items))) => items,
                Some((line, _)) => {
                    problems.push(Problem::new(line, "nodes: expected a list of nodes"));
                    &[]
                }
                None => {
                    problems.push(Problem::new(root.line, "no `nodes:` list"));
                    &[]
                }
            }
        }
        Value::Scalar { .. } => {
            return Err(vec![Problem::new(root.line, "expected a list of nodes, or a map with `nodes:`")])
        }
    };
    let mut nodes = Vec::with_capacity(items.len());
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut tokens: HashMap<TokenHash, (String, usize)> = HashMap::new();
    // Problems past the most an answer lists are only counted, so that a file wrong
    // throughout does not build a list as large as itself.
    let mut more = 0usize;
    for (i, item) in items.iter().enumerate() {
        let (node, found) = read_node(item, i + 1, rules);
        problems.extend(found.problems);
        if problems.len() > MAX_PROBLEMS {
            more += problems.len() - MAX_PROBLEMS;
            problems.truncate(MAX_PROBLEMS);
        }
        // Repeats are found across every node, checked or not.
        if let Some((id, line)) = found.id {
            if let Some(first) = ids.insert(id.clone(), line) {
                problems
                    .push(Problem::new(line, format!("{id}: also at line {first}; each node comes once")));
            }
            if let Some((hash, token_line)) = found.token {
                if let Some((other, _)) = tokens.get(&hash) {
                    problems.push(Problem::new(
                        token_line,
                        format!("{id}: the same token as {other}; each node has its own"),
                    ));
                } else {
                    tokens.insert(hash, (id, token_line));
                }
            }
        }
        nodes.extend(node);
    }
    if items.is_empty() && problems.is_empty() {
        problems.push(Problem::new(root.line, "the file lists no nodes"));
    }
    if problems.is_empty() {
        return Ok(nodes);
    }
    problems.sort_by_key(|p| p.line);
    if problems.len() > MAX_PROBLEMS {
        more += problems.len() - MAX_PROBLEMS;
        problems.truncate(MAX_PROBLEMS);
    }
    if more > 0 {
        let line = problems.last().map_or(1, |p| p.line);
        problems.push(Problem::new(line, format!("… and {more} more problems")));
    }
    Err(problems)
}

/// What `read_node` found even when the node has problems: its id and token (with
/// their lines), to find repeats across the file.
struct Found {
    problems: Vec<Problem>,
    id: Option<(String, usize)>,
    token: Option<(TokenHash, usize)>,
}

/// Reads the `index`th node of the file (from 1); the node, if it has no problem.
fn read_node(item: &Node, index: usize, rules: &Rules<'_>) -> (Option<ImportNode>, Found) {
    let mut found = Found { problems: Vec::new(), id: None, token: None };
    let Value::Map(pairs) = &item.value else {
        found
            .problems
            .push(Problem::new(item.line, format!("node {index}: expected a map of fields (id: …)")));
        return (None, found);
    };
    if pairs.len() > MAX_FIELDS {
        let why = format!("node {index}: {} fields; a node has at most {MAX_FIELDS}", pairs.len());
        found.problems.push(Problem::new(item.line, why));
        return (None, found);
    }
    let mut f =
        Fields { who: format!("node {index}"), line: item.line, map: HashMap::new(), problems: Vec::new() };
    for (k, v) in pairs {
        let key = match scalar(k) {
            Ok(Some(key)) => key,
            _ => {
                f.problems.push(Problem::new(k.line, format!("node {index}: a field name must be text")));
                continue;
            }
        };
        if let Some(known) = FIELDS.iter().find(|name| **name == key) {
            if f.map.insert(known, v).is_some() {
                f.problems.push(Problem::new(k.line, format!("node {index}: {key} is given twice")));
            }
        } else if !REPORTED.contains(&key) {
            let key: String = key.chars().take(64).collect();
            f.problems.push(Problem::new(
                k.line,
                format!("node {index}: unknown field {key:?}; a node's fields are {}", FIELDS.join(", ")),
            ));
        }
    }
    let id = match f.text("id") {
        Some(text) => {
            f.who = text.chars().take(80).collect();
            found.id = Some((f.who.clone(), f.line("id")));
            NodeId::parse(&text).map_err(|e| f.problem("id", e)).ok()
        }
        None => {
            f.problem("id", "id is required");
            None
        }
    };
    let status = match f.text("status").as_deref() {
        None | Some("approved") => NodeStatus::Approved,
        Some("pending") => NodeStatus::Pending,
        Some("rejected") => NodeStatus::Rejected,
        Some(other) => {
            let other: String = other.chars().take(40).collect();
            f.problem("status", format!("status {other:?}: expected pending, approved or rejected"));
            NodeStatus::Approved
        }
    };
    let asked_roles = f.list("roles");
    // One problem per unknown role, each named.
    for role in &asked_roles {
        f.check("roles", rules.roles.check(vec![role.clone()]));
    }
    let roles = rules.roles.check(asked_roles).unwrap_or_default();
    if status != NodeStatus::Approved && !roles.is_empty() {
        f.problem("roles", format!("a {} node has no roles: approve it to give it some", status.as_str()));
    }
    let asked_kind = match f.text("kind").as_deref() {
        None => None,
        Some("body") => Some(NodeKind::Body),
        Some("head") => Some(NodeKind::Head),
        Some(_) => {
            f.problem("kind", "kind: expected body or head");
            None
        }
    };
    let kind = kind_for(asked_kind.unwrap_or(NodeKind::Body), &roles, &rules.roles.head_roles);
    if asked_kind.is_some_and(|k| k != kind) {
        let why = match kind {
            NodeKind::Head => "one of its roles is a head role (head_roles)",
            NodeKind::Body => "its roles have no head role (head_roles)",
        };
        f.problem(
            "kind",
            format!(
                "kind {}: its roles make it a {}: {why}",
                asked_kind.map_or("", |k| k.as_str()),
                kind.as_str()
            ),
        );
    }
    let name = match f.text("name") {
        None => {
            f.problem("name", "name is required");
            None
        }
        Some(name) => match kind {
            NodeKind::Body => f.check("name", machine_name(name.trim())),
            NodeKind::Head => f.check("name", label("name", &name)),
        },
    };
    let ip = match f.text("ip").filter(|ip| !ip.trim().is_empty()) {
        Some(ip) => match ip.trim().parse::<std::net::IpAddr>() {
            Ok(parsed) => parsed.to_string(),
            Err(_) => {
                let ip: String = ip.chars().take(80).collect();
                f.problem("ip", format!("invalid ip {ip:?}: expected an IPv4 or IPv6 address"));
                String::new()
            }
        },
        None if kind == NodeKind::Body => {
            f.problem("ip", "a body needs its ip");
            String::new()
        }
        None => String::new(),
    };
    // An approved node stands somewhere; a pending or rejected one may not yet.
    let placed = status == NodeStatus::Approved;
    let place = |f: &mut Fields<'_>, field: &str| match f.text(field) {
        Some(v) => f.check(field, label(field, &v)).unwrap_or_default(),
        None if placed => {
            f.problem(field, format!("{field} is required for an approved node"));
            String::new()
        }
        None => String::new(),
    };
    let district = place(&mut f, "district");
    let venue = place(&mut f, "venue");
    let environment = match f.text("environment") {
        Some(e) => f.check("environment", fleet_environment(e)).unwrap_or_default(),
        None => "production".into(),
    };
    let owner = f.text("owner").and_then(|o| f.check("owner", label("owner", &o)));
    let draining = f.flag("draining");
    let assigned_body = f
        .text("assigned_body_id")
        .and_then(|b| NodeId::parse(&b).map_err(|e| f.problem("assigned_body_id", e)).ok());
    let app_id = f.text("app_id").and_then(|a| f.check("app_id", outside_id("app_id", a)));
    let asked_experiences = f.list("allowed_experiences");
    let allowed_experiences = first_of_each(
        asked_experiences
            .into_iter()
            .filter_map(|e| f.check("allowed_experiences", outside_id("experience", e)))
            .collect(),
    );
    if kind == NodeKind::Body {
        for field in ["assigned_body_id", "app_id"] {
            if f.given(field) {
                f.problem(field, format!("{field} is a head's; this node is a body"));
            }
        }
        if !allowed_experiences.is_empty() {
            f.problem("allowed_experiences", "allowed_experiences is a head's; this node is a body");
        }
    }
    if app_id.is_some() && assigned_body.is_none() {
        f.problem("app_id", "app_id needs an assigned_body_id");
    }
    let token = read_token(&mut f, status, rules);
    found.token = token.map(|t| (t, f.line(if f.given("token") { "token" } else { "token_sha256" })));
    let body_line = f.line("assigned_body_id");
    found.problems = f.problems;
    if !found.problems.is_empty() {
        return (None, found);
    }
    let (Some(id), Some(name)) = (id, name) else { return (None, found) };
    let event = Event::NodeImported {
        node_id: id.clone(),
        kind: kind.as_str().into(),
        name,
        ip,
        status: status.as_str().into(),
        roles,
        district,
        venue,
        environment,
        owner,
        draining,
        assigned_body,
        app_id,
        allowed_experiences,
    };
    let (node, head) = hydra_projections::imported(&event).expect("a node.imported event");
    let node = ImportNode { line: item.line, id, event, node, head, body_line, token };
    (Some(node), found)
}

/// The node's token as its hash: `token` in clear (hashed here, as enrollment hashes
/// it), or `token_sha256` as given. Messages never show either.
fn read_token(f: &mut Fields<'_>, status: NodeStatus, rules: &Rules<'_>) -> Option<TokenHash> {
    let hash = match (f.text("token"), f.text("token_sha256")) {
        (Some(_), Some(_)) => {
            f.problem("token_sha256", "give token or token_sha256, not both");
            return None;
        }
        (Some(token), None) => {
            if token.is_empty() || token.len() > 1024 || token.chars().any(char::is_control) {
                f.problem("token", "a token is 1 to 1024 printable characters");
                return None;
            }
            if token.trim() != token {
                f.problem("token", "the token has spaces at its ends, which an agent never sends");
                return None;
            }
            hash_token(&token)
        }
        (None, Some(hex_hash)) => {
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(hex_hash.trim(), &mut hash).is_err() {
                f.problem("token_sha256", "token_sha256 is 64 hex digits: the SHA-256 of the token");
                return None;
            }
            hash
        }
        (None, None) => {
            if status != NodeStatus::Rejected {
                f.problem("token", "token or token_sha256 is required: the agent keeps the token it has");
            }
            return None;
        }
    };
    let field = if f.given("token") { "token" } else { "token_sha256" };
    if status == NodeStatus::Rejected {
        f.problem(field, "a rejected node's token no longer works: leave it out");
        return None;
    }
    if (rules.reserved)(&hash) {
        f.problem(field, "this is one of the server's own tokens (admin, observer or fleet enrollment)");
        return None;
    }
    Some(hash)
}

/// What the server has of the tokens a file names: each node's token hash, and whose
/// each of the file's tokens is.
#[derive(Default)]
pub struct StoredTokens {
    of_node: HashMap<NodeId, TokenHash>,
    owner: HashMap<TokenHash, String>,
}

/// Reads the token store for the file's nodes (two point reads per node).
pub fn stored_tokens(store: &Store, nodes: &[ImportNode]) -> Result<StoredTokens, StoreError> {
    let mut out = StoredTokens::default();
    for n in nodes {
        if let Some(hash) = store.principal_token(&node_principal(&n.id))? {
            out.of_node.insert(n.id.clone(), hash);
        }
        if let Some(hash) = n.token {
            if let Some(owner) = store.token(&hash)? {
                out.owner.insert(hash, owner);
            }
        }
    }
    Ok(out)
}

/// A node of the file that differs from the server's, and how (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ImportChange)]
pub struct Change {
    pub node_id: String,
    pub line: usize,
    pub changes: Vec<String>,
}

/// What an import did, or would do with `dry_run`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ImportOutcome)]
pub struct Outcome {
    pub file: String,
    pub dry_run: bool,
    pub created: Vec<String>,
    pub updated: Vec<Change>,
    pub unchanged: Vec<String>,
    /// Events written (or that would be).
    pub events: usize,
}

/// Why an import writes nothing: problems with the file against the server (always
/// refused), or nodes that differ from the server's (refused without `--update`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub file: String,
    pub problems: Vec<Problem>,
    pub conflicts: Vec<Change>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (p, c) = (self.problems.len(), self.conflicts.len());
        if p > MAX_PROBLEMS {
            write!(f, "{} refused: more than {MAX_PROBLEMS} problems; nothing was written", self.file)
        } else if p > 0 {
            write!(f, "{} refused: {p} problem{}; nothing was written", self.file, plural(p))
        } else {
            let (nodes, differ) = if c == 1 { ("node", "differs") } else { ("nodes", "differ") };
            write!(
                f,
                "{} refused: {c} {nodes} {differ} from the server's (pass update to replace them); nothing was \
                 written",
                self.file
            )
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Why `body` cannot serve `head` (the reason `head.unassigned` records, and the
/// problem's text), as `heads::assign` and the pairing rules of drain and placement
/// say, without the `online` check: nothing imported has heartbeated yet.
fn pairing(head: &NodeView, body_id: &NodeId, body: &NodeView) -> Result<(), (&'static str, String)> {
    if body.kind != NodeKind::Body {
        return Err(("body_no_longer_a_body", format!("{body_id} is a head, not a body")));
    }
    if body.status != NodeStatus::Approved {
        return Err(("body_not_approved", format!("{body_id} is {}, not approved", body.status.as_str())));
    }
    let place = |n: &NodeView| (n.district.clone(), n.venue.clone(), n.environment.clone());
    if place(body) != place(head) {
        return Err((
            "placement_changed",
            format!(
                "{body_id} is in {}/{} ({}) but the head is in {}/{} ({}): a head streams only from its own \
                 venue and environment",
                body.district, body.venue, body.environment, head.district, head.venue, head.environment
            ),
        ));
    }
    if body.draining {
        return Err(("body_drained", format!("{body_id} is draining: a drained body takes no heads")));
    }
    Ok(())
}

/// A node as an import shows it, field by field (a head's last three), to say how
/// the server's differs from the file's.
fn shown(n: &NodeView, h: Option<&HeadView>) -> [(&'static str, String); 13] {
    let text = |o: Option<&String>| o.map_or("none".to_owned(), |o| format!("{o:?}"));
    let body = h.and_then(|h| h.assigned_body.as_ref()).map_or("none".to_owned(), |b| b.to_string());
    [
        ("kind", n.kind.as_str().into()),
        ("name", format!("{:?}", n.name)),
        ("ip", format!("{:?}", n.ip)),
        ("status", n.status.as_str().into()),
        ("roles", format!("{:?}", n.roles)),
        ("district", format!("{:?}", n.district)),
        ("venue", format!("{:?}", n.venue)),
        ("environment", n.environment.clone()),
        ("owner", text(n.owner.as_ref())),
        ("draining", n.draining.to_string()),
        ("assigned_body_id", body),
        ("app_id", text(h.and_then(|h| h.app_id.as_ref()))),
        ("allowed_experiences", format!("{:?}", h.map_or(&[][..], |h| h.allowed_experiences.as_slice()))),
    ]
}

/// How the server's node differs from the file's: one entry per field, the token by
/// name only.
fn differences(
    v: &NodeView,
    h: Option<&HeadView>,
    n: &ImportNode,
    stored: Option<&TokenHash>,
) -> Vec<String> {
    let mut out: Vec<String> = shown(v, h)
        .into_iter()
        .zip(shown(&n.node, n.head.as_ref()))
        .filter(|((_, old), (_, new))| old != new)
        .map(|((name, old), (_, new))| format!("{name} {old} → {new}"))
        .collect();
    if stored != n.token.as_ref() {
        out.push("token (a different one)".into());
    }
    out
}

/// The import decided against the views: the events and token writes, and what it
/// does to each node.
pub struct Plan {
    pub outcome: Outcome,
    pub decision: Decision,
}

/// Decides the import of `nodes` against the views and the stored tokens: a new node
/// is created, one the server has the same is left alone, one that differs is a
/// conflict (replaced with `update`). Pairings are checked as they will be after the
/// import; the heads that a replaced body can no longer serve lose it first.
pub fn plan(
    views: &ClusterViews,
    file: &str,
    nodes: &[ImportNode],
    stored: &StoredTokens,
    update: bool,
) -> Result<Plan, Refusal> {
    let mut refusal = Refusal { file: file.to_owned(), ..Refusal::default() };
    let mut outcome = Outcome { file: file.to_owned(), ..Outcome::default() };
    let mut imported = Vec::new();
    let mut tokens = Vec::new();
    let in_file: HashMap<&NodeId, &ImportNode> = nodes.iter().map(|n| (&n.id, n)).collect();
    for n in nodes {
        let principal = node_principal(&n.id);
        if let Some(owner) = n.token.as_ref().and_then(|t| stored.owner.get(t)).filter(|o| **o != principal) {
            refusal.problems.push(Problem::new(n.line, format!("{}: its token is already {owner}'s", n.id)));
        }
        let Some(v) = views.nodes.get(&n.id) else {
            outcome.created.push(n.id.to_string());
            imported.push(n.event.clone());
            tokens.extend(n.token.map(|hash| TokenWrite::Put { hash, principal }));
            continue;
        };
        let stored_token = stored.of_node.get(&n.id);
        let changes = differences(v, views.heads.get(&n.id), n, stored_token);
        if changes.is_empty() {
            outcome.unchanged.push(n.id.to_string());
            continue;
        }
        let change = Change { node_id: n.id.to_string(), line: n.line, changes };
        if v.status == NodeStatus::Rejected {
            refusal.problems.push(Problem::new(
                n.line,
                format!(
                    "{}: rejected on this server; a rejected node comes back only by enrolling again",
                    n.id
                ),
            ));
        } else if n.node.status == NodeStatus::Rejected {
            refusal.problems.push(Problem::new(
                n.line,
                format!("{}: rejecting a node the server has is `hydracluster reject`, not an import", n.id),
            ));
        } else if !update {
            refusal.conflicts.push(change);
        } else {
            imported.push(n.event.clone());
            if stored_token != n.token.as_ref() {
                tokens.push(TokenWrite::Revoke { principal: principal.clone() });
                tokens.extend(n.token.map(|hash| TokenWrite::Put { hash, principal }));
            }
            outcome.updated.push(change);
        }
    }
    // Each node as it stands after the import.
    let after = |id: &NodeId| -> Option<&NodeView> {
        match in_file.get(id) {
            Some(n) => Some(&n.node),
            None => views.nodes.get(id),
        }
    };
    for n in nodes {
        let Some(body) = n.head.as_ref().and_then(|h| h.assigned_body.as_ref()) else { continue };
        let why = match after(body) {
            None => format!("no node {body} on this server or in the file"),
            Some(b) => match pairing(&n.node, body, b) {
                Ok(()) => continue,
                Err((_, why)) => why,
            },
        };
        refusal.problems.push(Problem::new(n.body_line, format!("{}: assigned_body_id: {why}", n.id)));
    }
    // The server's heads, not in the file, pinned to a body the import replaces.
    let replaced: std::collections::HashSet<&str> =
        outcome.updated.iter().map(|c| c.node_id.as_str()).collect();
    let mut unassigned = Vec::new();
    for (head_id, h) in &views.heads {
        let Some(body) = h.assigned_body.as_ref().filter(|b| replaced.contains(b.as_str())) else { continue };
        if in_file.contains_key(head_id) {
            continue;
        }
        let (Some(head), Some(b)) = (views.nodes.get(head_id), after(body)) else { continue };
        if let Err((reason, _)) = pairing(head, body, b) {
            unassigned.push(Event::HeadUnassigned {
                head_id: head_id.clone(),
                body_id: body.clone(),
                reason: reason.into(),
            });
        }
    }
    if !refusal.problems.is_empty() || !refusal.conflicts.is_empty() {
        refusal.problems.sort_by_key(|p| p.line);
        return Err(refusal);
    }
    let mut events = unassigned;
    events.extend(imported);
    outcome.events = events.len();
    Ok(Plan { outcome, decision: Decision { events, tokens, ..Decision::default() } })
}

/// An import as asked: the file's name (the events' cause is `import:<file>`), its
/// checked nodes, whether nodes that differ are replaced, and whether to only say
/// what would happen.
pub struct Import {
    pub file: String,
    pub nodes: Vec<ImportNode>,
    pub update: bool,
    pub dry_run: bool,
}

/// The name a file is recorded under: 1 to 128 printable characters.
pub fn file_name(name: String) -> Result<String, DomainError> {
    outside_id("the file's name", name)
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Refused(Refusal),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs an import: with `dry_run`, decides it against the committed views and writes
/// nothing; otherwise submits it as one command, so that all of its events and token
/// writes land in one flush, or none do.
pub async fn run(ledger: &Ledger<ClusterViews>, import: Import) -> Result<Outcome, ImportError> {
    let Import { file, nodes, update, dry_run } = import;
    let store = ledger.store().clone();
    if dry_run {
        let (nodes, stored) = tokio::task::spawn_blocking(move || {
            let stored = stored_tokens(&store, &nodes);
            (nodes, stored)
        })
        .await
        .map_err(|e| LedgerError::Unavailable(format!("reading the token store: {e}")))?;
        let stored = stored?;
        let mut outcome =
            ledger.read(|v| plan(v, &file, &nodes, &stored, update)).map_err(ImportError::Refused)?.outcome;
        outcome.dry_run = true;
        return Ok(outcome);
    }
    // The command runs on the writer; what it decided comes back through this slot.
    let slot: Arc<parking_lot::Mutex<Option<Result<Outcome, Refusal>>>> = Arc::default();
    let decided = slot.clone();
    let cause = format!("import:{file}");
    let written = ledger
        .submit(
            cause,
            super::sessions::tracked(move |views| {
                // Read on the writer, so that no other command changes a token in between.
                let stored = stored_tokens(&store, &nodes)
                    .map_err(|e| DomainError::Unavailable(format!("reading the token store: {e}")))?;
                match plan(views, &file, &nodes, &stored, update) {
                    Ok(p) => {
                        *decided.lock() = Some(Ok(p.outcome));
                        Ok(p.decision)
                    }
                    Err(refusal) => {
                        let text = refusal.to_string();
                        *decided.lock() = Some(Err(refusal));
                        Err(DomainError::Conflict(text))
                    }
                }
            }),
        )
        .await;
    let decided = slot.lock().take();
    match (written, decided) {
        (Ok(_), Some(Ok(outcome))) => Ok(outcome),
        (Err(LedgerError::Domain(_)), Some(Err(refusal))) => Err(ImportError::Refused(refusal)),
        (Err(e), _) => Err(e.into()),
        (Ok(_), _) => Err(LedgerError::Unavailable("the import's command did not run".into()).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::views_with;

    fn roles() -> RoleRules {
        RoleRules {
            catalog: ["hydrabody", "render-node", "hydraheadwindows"].map(String::from).to_vec(),
            head_roles: vec!["hydraheadwindows".into()],
        }
    }

    fn read(text: &str) -> Result<Vec<ImportNode>, Vec<Problem>> {
        let roles = roles();
        let reserved = |h: &TokenHash| *h == hash_token("the-admin-token");
        parse(text, &Rules { roles: &roles, reserved: &reserved })
    }

    const GOOD: &str = "\
nodes:
  - id: node-b1
    name: body-1
    ip: 10.0.0.1
    roles: [hydrabody]
    district: north
    venue: arena
    token: hyn_one
  - id: node-h1
    name: kiosk 1
    roles: [hydraheadwindows]
    district: north
    venue: arena
    assigned_body_id: node-b1
    app_id: app-7
    allowed_experiences: [racing, racing, space]
    token_sha256: \"0000000000000000000000000000000000000000000000000000000000000001\"
  - id: node-p1
    name: waiting
    ip: \"::1\"
    status: pending
    token: hyn_three
    last_seen: 2026-01-01T00:00:00Z
";

    #[test]
    fn a_good_file_reads_as_the_node_list_names_it() {
        let nodes = read(GOOD).unwrap();
        assert_eq!(nodes.len(), 3);
        let (b, h, p) = (&nodes[0].node, &nodes[1].node, &nodes[2].node);
        assert_eq!((nodes[0].line, b.kind, b.status), (2, NodeKind::Body, NodeStatus::Approved));
        assert_eq!(nodes[0].token, Some(hash_token("hyn_one")));
        assert_eq!((h.kind, h.name.as_str(), h.ip.as_str()), (NodeKind::Head, "kiosk 1", ""));
        let head = nodes[1].head.as_ref().unwrap();
        assert_eq!(
            (head.assigned_body.as_ref().map(NodeId::as_str), nodes[1].body_line),
            (Some("node-b1"), 14)
        );
        assert_eq!(head.allowed_experiences, ["racing", "space"]);
        let mut one = [0u8; 32];
        one[31] = 1;
        assert_eq!(nodes[1].token, Some(one));
        assert_eq!((p.status, p.ip.as_str(), p.district.as_str()), (NodeStatus::Pending, "::1", ""));
        // A top-level list reads the same.
        let list = GOOD.replace("nodes:\n  ", "").replace("\n  ", "\n");
        assert_eq!(read(&list).unwrap().iter().map(|n| &n.id).collect::<Vec<_>>(), [&b.id, &h.id, &p.id]);
    }

    #[test]
    fn every_problem_is_listed_with_its_line() {
        let text = "\
- id: node-a
  name: a
  ip: 10.0.0.300
  roles: [hydrabody, miner]
  district: north
  venue: arena
  token: t1
- id: node-a
  name: [x]
  ip: 10.0.0.2
  roles: hydrabody
  district: north
  venue: arena
  token: t2
- id: Node_B
  name: b
  ip: 10.0.0.3
  status: retired
  draining: maybe
  colour: blue
  token: t1
- id: node-c
  name: c
  ip: 10.0.0.4
  environment: development
  district: north
  venue: arena
  token: the-admin-token
  token_sha256: abc
- id: node-d
  name: d
  ip: 10.0.0.5
  district: north
  venue: arena
";
        let problems = read(text).unwrap_err();
        let got: Vec<(usize, &str)> = problems.iter().map(|p| (p.line, p.message.as_str())).collect();
        let has = |line: usize, part: &str| {
            assert!(
                got.iter().any(|(l, m)| *l == line && m.contains(part)),
                "no {part:?} at line {line}: {got:#?}"
            )
        };
        has(3, "invalid ip \"10.0.0.300\"");
        has(4, "unknown role \"miner\"");
        has(8, "also at line 1");
        has(9, "name: expected text, found a list");
        has(11, "roles: expected a list");
        has(15, "invalid node id \"Node_B\"");
        has(18, "status \"retired\"");
        has(19, "draining: expected true or false");
        has(20, "unknown field \"colour\"");
        has(25, "unknown environment \"development\"");
        has(29, "not both");
        has(30, "node-d: token or token_sha256 is required");
        // The duplicate token of a node with other problems is found too.
        has(21, "the same token as node-a");
        assert!(got.windows(2).all(|w| w[0].0 <= w[1].0), "sorted by line");
        assert!(!problems.iter().any(|p| p.message.contains("t1")), "no token in a message");
    }

    #[test]
    fn a_file_that_is_not_a_node_list_says_where() {
        let first = |text: &str| read(text).unwrap_err().remove(0);
        assert_eq!(first("").message, "the file is empty: it lists no nodes");
        assert_eq!(first("[]").message, "the file lists no nodes");
        let p = first("nodes:\n  - id: node-a\n    name: [\n");
        assert!(p.message.starts_with("not valid YAML"), "{p:?}");
        assert_eq!(
            first("fleet: []\nnodes: []\n"),
            Problem::new(1, "unknown top-level key: a node file is a list of nodes, or a map with `nodes:`")
        );
        assert_eq!(first("- &a {id: node-a}\n- *a\n").line, 2);
        assert_eq!(first("- id: node-a\n---\n- id: node-b\n").line, 3);
        assert!(first(&"[".repeat(100)).message.contains("nested deeper"));
        // A file wrong throughout lists the first problems and counts the rest.
        let many = format!(
            "- {{id: node-a, {}}}\n",
            (0..60).map(|i| format!("x{i}: 1")).collect::<Vec<_>>().join(", ")
        );
        let problems = read(&many.repeat(20)).unwrap_err();
        assert_eq!(problems.len(), MAX_PROBLEMS + 1);
        assert!(problems[MAX_PROBLEMS].message.starts_with("… and "), "{:?}", problems.last());
        let refusal = Refusal { file: "f.yaml".into(), problems, conflicts: vec![] };
        assert_eq!(refusal.to_string(), "f.yaml refused: more than 500 problems; nothing was written");
        let wide = format!("- {{{}}}\n", (0..65).map(|i| format!("x{i}: 1")).collect::<Vec<_>>().join(", "));
        assert!(first(&wide).message.contains("65 fields; a node has at most 64"));
        let long = format!("- {{id: node-a, roles: [{}]}}\n", vec!["a"; 1001].join(", "));
        assert!(read(&long).unwrap_err().iter().any(|p| p.message.contains("roles: at most 1000 items")));
        let p = first("- id: node-a\n  name: a\n  ip: 1.2.3.4\n  district: n\n  venue: v\n  token: 12345\n");
        assert_eq!(
            p,
            Problem::new(6, "node-a: token: expected text, found a number (quote it to make it text)")
        );
    }

    #[test]
    fn kinds_follow_the_roles_and_head_fields_belong_to_heads() {
        let problems = read(
            "- {id: node-a, kind: body, name: a, roles: [hydraheadwindows], district: n, venue: v, token: t}\n\
             - {id: node-b, name: b, ip: 10.0.0.1, district: n, venue: v, app_id: x, token: u}\n",
        )
        .unwrap_err();
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert!(messages[0].contains("kind body: its roles make it a head"), "{messages:?}");
        assert!(messages.iter().any(|m| m.contains("app_id is a head's")), "{messages:?}");
    }

    fn body(id: &str, district: &str) -> Event {
        Event::NodeImported {
            node_id: NodeId::parse(id).unwrap(),
            kind: "body".into(),
            name: "old".into(),
            ip: "10.0.0.9".into(),
            status: "approved".into(),
            roles: vec!["hydrabody".into()],
            district: district.into(),
            venue: "arena".into(),
            environment: "production".into(),
            owner: None,
            draining: false,
            assigned_body: None,
            app_id: None,
            allowed_experiences: vec![],
        }
    }

    fn stored(nodes: &[ImportNode]) -> StoredTokens {
        StoredTokens {
            of_node: nodes.iter().filter_map(|n| Some((n.id.clone(), n.token?))).collect(),
            owner: HashMap::new(),
        }
    }

    #[test]
    fn an_import_creates_then_changes_nothing() {
        let nodes = read(GOOD).unwrap();
        let empty = ClusterViews::default();
        let p = plan(&empty, "f.yaml", &nodes, &StoredTokens::default(), false).unwrap();
        assert_eq!(p.outcome.created, ["node-b1", "node-h1", "node-p1"]);
        assert_eq!(p.decision.events.len(), 3);
        assert_eq!(p.decision.tokens.len(), 3);
        let views = views_with(p.decision.events);
        let again = plan(&views, "f.yaml", &nodes, &stored(&nodes), false).unwrap();
        assert_eq!(again.outcome.unchanged.len(), 3);
        assert!(again.decision.events.is_empty() && again.decision.tokens.is_empty());
    }

    #[test]
    fn a_node_that_differs_is_a_conflict_unless_updated() {
        let nodes = read(GOOD).unwrap();
        let views = views_with(vec![body("node-b1", "south")]);
        let mut tokens = stored(&nodes);
        tokens.of_node.insert(nodes[0].id.clone(), hash_token("another"));
        let refusal = plan(&views, "f.yaml", &nodes, &tokens, false).err().unwrap();
        assert!(refusal.problems.is_empty(), "{refusal:?}");
        let c = &refusal.conflicts[0];
        assert_eq!((c.node_id.as_str(), c.line), ("node-b1", 2));
        assert_eq!(
            c.changes,
            [
                "name \"old\" → \"body-1\"",
                "ip \"10.0.0.9\" → \"10.0.0.1\"",
                "district \"south\" → \"north\"",
                "token (a different one)"
            ]
        );
        let p = plan(&views, "f.yaml", &nodes, &tokens, true).unwrap();
        assert_eq!(p.outcome.updated.len(), 1);
        let principal = node_principal(&nodes[0].id);
        assert!(p.decision.tokens.starts_with(&[
            TokenWrite::Revoke { principal: principal.clone() },
            TokenWrite::Put { hash: hash_token("hyn_one"), principal }
        ]));
    }

    #[test]
    fn pairings_are_checked_as_they_will_be() {
        let nodes = read(
            &GOOD.replace("    venue: arena\n    token: hyn_one", "    venue: hall\n    token: hyn_one"),
        )
        .unwrap();
        let r =
            plan(&ClusterViews::default(), "f.yaml", &nodes, &StoredTokens::default(), false).err().unwrap();
        assert_eq!(r.problems.len(), 1, "{r:?}");
        assert_eq!(r.problems[0].line, 14);
        assert!(r.problems[0].message.contains("node-b1 is in north/hall"), "{r:?}");
        // A server head pinned to a body the import moves loses it, before the import.
        let views = views_with(vec![
            body("node-b1", "north"),
            Event::HeadRegistered {
                node_id: NodeId::parse("node-k").unwrap(),
                name: "k".into(),
                district: "north".into(),
                venue: "arena".into(),
            },
            Event::HeadAssigned {
                node_id: NodeId::parse("node-k").unwrap(),
                body_id: Some(NodeId::parse("node-b1").unwrap()),
                app_id: None,
            },
        ]);
        let only_body = vec![nodes[0].clone()];
        let p = plan(&views, "f.yaml", &only_body, &stored(&only_body), true).unwrap();
        assert!(
            matches!(&p.decision.events[0], Event::HeadUnassigned { reason, .. } if reason == "placement_changed")
        );
        assert_eq!(p.decision.events[1].type_name(), "node.imported");
    }

    #[test]
    fn a_token_another_principal_has_is_refused() {
        let nodes = read(GOOD).unwrap();
        let mut tokens = StoredTokens::default();
        tokens.owner.insert(hash_token("hyn_one"), "node:node-zz".into());
        let r = plan(&ClusterViews::default(), "f.yaml", &nodes, &tokens, true).err().unwrap();
        assert_eq!(r.problems, [Problem::new(2, "node-b1: its token is already node:node-zz's")]);
    }
}
