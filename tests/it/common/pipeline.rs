//! `hydrapipeline` for end-to-end tests: the command with a clean environment, and a
//! running `watch` whose stdout lines are collected as they come.

use super::OBSERVER;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

/// `hydrapipeline`, with no services or token from the developer's environment.
pub fn hydrapipeline() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hydrapipeline"));
    c.env_remove("HYDRAPIPELINE_SERVICES").env_remove("HYDRAPIPELINE_TOKEN");
    c
}

/// A running `hydrapipeline watch` whose stdout lines are collected as they come.
pub struct Watcher {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    pub fn start(args: &[&str]) -> Watcher {
        let mut cmd = hydrapipeline();
        cmd.args(args);
        let mut child = super::spawn_piped(cmd, "hydrapipeline");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Watcher { child, lines }
    }

    /// `hydrapipeline --service NAME=URL… --token OBSERVER watch --json ARGS…`.
    pub fn watch(services: &[(&str, &str)], args: &[&str]) -> Watcher {
        let services: Vec<String> = services
            .iter()
            .flat_map(|(name, url)| ["--service".to_owned(), format!("{name}={url}")])
            .collect();
        let mut all: Vec<&str> = services.iter().map(String::as_str).collect();
        all.extend(["--token", OBSERVER, "watch", "--json"]);
        all.extend(args);
        Watcher::start(&all)
    }

    pub fn json(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
            .collect()
    }

    pub fn events(&self) -> Vec<Value> {
        self.json().into_iter().filter(|v| v.get("id").is_some()).collect()
    }

    pub fn ids(&self) -> Vec<u64> {
        self.events().iter().map(|v| v["id"].as_u64().unwrap()).collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
