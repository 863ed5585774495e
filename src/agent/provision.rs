//! Role recipes on reprovision: for each recipe of the heartbeat answer, download the
//! artifact (streamed to disk), check its sha256, unpack it into a versioned directory
//! (a temporary one renamed into place, so a half-unpacked version never looks
//! complete), run its install hook there, and only then switch the role's `current`
//! link atomically; finally report the result to the server. Runs in its own task, one
//! provisioning at a time, so heartbeats never wait for it.
//!
//! Layout under the state directory:
//! - `artifacts/<role>/<version>.part` while downloading (removed afterwards);
//! - `roles/<role>/<version>/` the unpacked version (a gzip artifact is a `.tar.gz`
//!   unpacked with the system `tar`; anything else is kept as one file, named after
//!   the URL's last path segment);
//! - `roles/<role>/current` a symlink to the version in use.

use super::backoff::Backoff;
use super::client::{CallError, Server};
use super::runner;
use super::{stopped, Revoked};
use hydra_core::names::path_safe;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

/// How long an install hook may run.
pub const INSTALL_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// A download that sends nothing for this long has failed.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a result is retried before it is given up.
const DELIVERY_LIMIT: Duration = Duration::from_secs(5 * 60);

/// One role's recipe, as the heartbeat answer carries it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Recipe {
    pub role: String,
    pub artifact_url: String,
    pub version: String,
    pub sha256: String,
    #[serde(default)]
    pub install: Option<String>,
}

/// The recipes of a heartbeat answer (none when it has no `recipes`).
pub fn recipes(answer: &serde_json::Value) -> Result<Vec<Recipe>, String> {
    match answer.get("recipes") {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(v) => {
            serde_json::from_value(v.clone()).map_err(|e| format!("the recipes are not understood: {e}"))
        }
    }
}

/// What a reprovision asks: the recipes, or why they could not be read.
pub type Job = Result<Vec<Recipe>, String>;

/// Runs the provisioning jobs handed over by the heartbeat loop, one at a time, and
/// delivers each result.
pub async fn provision_loop(
    server: Server,
    state: PathBuf,
    mut jobs: mpsc::Receiver<Job>,
    provisioning: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Revoked> {
    loop {
        let job = tokio::select! {
            j = jobs.recv() => match j {
                Some(j) => j,
                // The heartbeat loop ended (and says why): wait for the stop rather
                // than end first and hide its reason from `run`.
                None => {
                    stopped(&mut stop).await;
                    return Ok(());
                }
            },
            _ = stopped(&mut stop) => return Ok(()),
        };
        let outcome = match job {
            Ok(recipes) => {
                tracing::info!(roles = recipes.len(), "provisioning");
                tokio::select! {
                    r = provision_all(&state, &recipes) => r,
                    _ = stopped(&mut stop) => {
                        tracing::info!("the agent is stopping: provisioning abandoned (current links untouched)");
                        return Ok(());
                    }
                }
            }
            Err(e) => Err(e),
        };
        let body = match &outcome {
            Ok(version) => {
                tracing::info!(version = %version, "provisioning succeeded");
                serde_json::json!({"success": true, "version": version})
            }
            Err(error) => {
                tracing::warn!(error = %error, "provisioning failed");
                serde_json::json!({"success": false, "error": error})
            }
        };
        deliver(&server, &body, &mut stop).await?;
        // Delivered (or dropped for good): the next beat says nothing is in hand.
        provisioning.store(false, Ordering::SeqCst);
    }
}

/// Installs every recipe, in order; the first failure ends the run. Success gives
/// `role=version,…`.
pub async fn provision_all(state: &Path, recipes: &[Recipe]) -> Result<String, String> {
    let mut done = Vec::new();
    for r in recipes {
        install_recipe(state, r).await.map_err(|e| format!("{}: {e}", r.role))?;
        done.push(format!("{}={}", r.role, r.version));
    }
    Ok(done.join(","))
}

/// One recipe: download, check, unpack, hook, switch. `current` moves only at the end.
pub async fn install_recipe(state: &Path, r: &Recipe) -> Result<(), String> {
    if !path_safe(&r.role) || !path_safe(&r.version) {
        return Err(format!("role {:?} or version {:?} cannot name a directory", r.role, r.version));
    }
    let artifacts = state.join("artifacts").join(&r.role);
    let roles = state.join("roles").join(&r.role);
    for dir in [&artifacts, &roles] {
        tokio::fs::create_dir_all(dir).await.map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    sweep_leftovers(&roles).await;
    let part = artifacts.join(format!("{}.part", r.version));
    let result = fetch_and_place(r, &part, &roles).await;
    let _ = tokio::fs::remove_file(&part).await;
    result
}

async fn fetch_and_place(r: &Recipe, part: &Path, roles: &Path) -> Result<(), String> {
    tracing::info!(role = %r.role, version = %r.version, url = %r.artifact_url, "downloading");
    let digest = download(&r.artifact_url, part).await?;
    if !digest.eq_ignore_ascii_case(r.sha256.trim()) {
        return Err(format!("checksum mismatch: expected sha256 {}, got {digest}", r.sha256.trim()));
    }
    // Unpack beside the final directory, then rename: a crash leaves only a temp dir.
    let tmp = roles.join(format!(".{}.unpacking-{}", r.version, std::process::id()));
    let _ = tokio::fs::remove_dir_all(&tmp).await;
    tokio::fs::create_dir_all(&tmp).await.map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    if let Err(e) = unpack(part, &tmp, &r.artifact_url).await {
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        return Err(e);
    }
    let dir = roles.join(&r.version);
    // Reinstalling the same version: the old directory waits aside until the hook
    // succeeded, and comes back if it did not.
    let aside = roles.join(format!(".{}.previous-{}", r.version, std::process::id()));
    let had_old = tokio::fs::symlink_metadata(&dir).await.is_ok();
    if had_old {
        let _ = tokio::fs::remove_dir_all(&aside).await;
        tokio::fs::rename(&dir, &aside)
            .await
            .map_err(|e| format!("cannot move the old {}: {e}", dir.display()))?;
    }
    let restore = || async {
        let _ = tokio::fs::remove_dir_all(&dir).await;
        if had_old {
            let _ = tokio::fs::rename(&aside, &dir).await;
        }
    };
    if let Err(e) = tokio::fs::rename(&tmp, &dir).await {
        let _ = tokio::fs::remove_dir_all(&tmp).await;
        restore().await;
        return Err(format!("cannot move the unpacked version into place: {e}"));
    }
    if let Some(hook) = r.install.as_deref().filter(|h| !h.trim().is_empty()) {
        if let Err(e) = run_hook(hook, &dir).await {
            restore().await;
            return Err(e);
        }
    }
    if let Err(e) = switch_current(roles, &dir) {
        restore().await;
        return Err(e);
    }
    if had_old {
        let _ = tokio::fs::remove_dir_all(&aside).await;
    }
    tracing::info!(role = %r.role, version = %r.version, "installed; current switched");
    Ok(())
}

/// Removes the temporary directories of a run that died (one run at a time, so none
/// is in use).
async fn sweep_leftovers(roles: &Path) {
    let Ok(mut entries) = tokio::fs::read_dir(roles).await else { return };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.contains(".unpacking-") {
            let _ = tokio::fs::remove_dir_all(entry.path()).await;
        }
    }
}

/// Streams `url` into `to`, hashing as it goes; the hex sha256.
async fn download(url: &str, to: &Path) -> Result<String, String> {
    // A plain client: the node token never goes to an artifact server.
    let http = super::client::plain_http();
    let mut resp = tokio::time::timeout(STALL_TIMEOUT, http.get(url).send())
        .await
        .map_err(|_| "download failed: no answer in time".to_owned())?
        .map_err(|e| format!("download failed: {}", super::client::describe(&e)))?;
    if !resp.status().is_success() {
        return Err(format!("download failed: the artifact server answered {}", resp.status()));
    }
    let mut file =
        tokio::fs::File::create(to).await.map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    let mut hasher = Sha256::new();
    loop {
        let chunk = tokio::time::timeout(STALL_TIMEOUT, resp.chunk())
            .await
            .map_err(|_| "download failed: the artifact server stalled".to_owned())?
            .map_err(|e| format!("download failed: {}", super::client::describe(&e)))?;
        let Some(chunk) = chunk else { break };
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    }
    file.flush().await.map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    file.sync_all().await.map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A gzip artifact is a tarball (`tar -xzf`); anything else is kept as one file.
async fn unpack(artifact: &Path, into: &Path, url: &str) -> Result<(), String> {
    let mut magic = [0u8; 2];
    let is_gzip = {
        use std::io::Read;
        std::fs::File::open(artifact).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
            && magic == [0x1f, 0x8b]
    };
    if is_gzip {
        let out = tokio::process::Command::new("tar")
            .arg("-xzf")
            .arg(artifact)
            .arg("-C")
            .arg(into)
            .arg("--no-same-owner")
            .output()
            .await
            .map_err(|e| format!("unpack failed: cannot run tar: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!("unpack failed: tar: {}", err.trim()));
        }
        return Ok(());
    }
    let name = url
        .split(['?', '#'])
        .next()
        .and_then(|u| u.rsplit('/').next())
        .filter(|n| path_safe(n))
        .unwrap_or("artifact");
    tokio::fs::copy(artifact, into.join(name)).await.map_err(|e| format!("unpack failed: {e}"))?;
    Ok(())
}

/// Single quotes for `bash`.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

async fn run_hook(hook: &str, dir: &Path) -> Result<(), String> {
    tracing::info!(dir = %dir.display(), "running the install hook");
    let command = format!("cd {} && {hook}", quote(dir));
    let o = runner::run_command(&command, INSTALL_TIMEOUT, std::future::pending()).await;
    if o.timed_out {
        return Err(format!("install hook timed out after {}", humantime::format_duration(INSTALL_TIMEOUT)));
    }
    match o.exit_code {
        Some(0) => Ok(()),
        code => {
            let tail: String = {
                let err = o.stderr.trim();
                let start = err.char_indices().rev().nth(499).map_or(0, |(i, _)| i);
                err[start..].to_owned()
            };
            let code = code.map_or_else(|| "did not start".into(), |c| format!("exited {c}"));
            Err(format!("install hook {code}: {tail}"))
        }
    }
}

/// Points `roles/<role>/current` at `dir`: a new link, renamed over the old one.
fn switch_current(roles: &Path, dir: &Path) -> Result<(), String> {
    let tmp = roles.join("current.tmp");
    let _ = std::fs::remove_file(&tmp);
    let target = dir.file_name().map(PathBuf::from).unwrap_or_else(|| dir.to_owned());
    std::os::unix::fs::symlink(&target, &tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, roles.join("current")).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot switch current: {e}")
    })
}

/// Posts the result until the server answers it (409: it no longer expects one).
async fn deliver(
    server: &Server,
    body: &serde_json::Value,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), Revoked> {
    let give_up = Instant::now() + DELIVERY_LIMIT;
    let mut backoff = Backoff::default();
    loop {
        let posted = tokio::select! {
            r = server.provision_result(body) => r,
            _ = stopped(stop) => return Ok(()),
        };
        let e: CallError = match posted {
            Ok(()) => {
                tracing::info!("provisioning result recorded");
                return Ok(());
            }
            Err(e) if e.revoked() => return Err(Revoked(e.to_string())),
            Err(e) if e.status() == Some(409) => {
                tracing::info!(error = %e, "the server no longer expects this provisioning result; dropped");
                return Ok(());
            }
            Err(e) if e.transient() => e,
            Err(e) => {
                tracing::warn!(error = %e, "the server refused the provisioning result; dropped");
                return Ok(());
            }
        };
        if Instant::now() >= give_up {
            tracing::error!(error = %e, "could not deliver the provisioning result for 5 minutes; giving up");
            return Ok(());
        }
        tracing::warn!(error = %e, "delivering the provisioning result failed; retrying");
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = stopped(stop) => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_are_read_from_the_answer() {
        let a = serde_json::json!({"recipes": [{"role": "r", "artifact_url": "http://x/a", "version": "1", "sha256": "ab", "install": null}]});
        let r = recipes(&a).unwrap();
        assert_eq!(r[0].role, "r");
        assert_eq!(r[0].install, None);
        assert!(recipes(&serde_json::json!({})).unwrap().is_empty());
        assert!(recipes(&serde_json::json!({"recipes": [{"role": 1}]})).is_err());
    }

    #[test]
    fn current_is_switched_by_rename() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("1")).unwrap();
        std::fs::create_dir(d.path().join("2")).unwrap();
        switch_current(d.path(), &d.path().join("1")).unwrap();
        assert_eq!(std::fs::read_link(d.path().join("current")).unwrap(), PathBuf::from("1"));
        switch_current(d.path(), &d.path().join("2")).unwrap();
        assert_eq!(std::fs::read_link(d.path().join("current")).unwrap(), PathBuf::from("2"));
        assert!(!d.path().join("current.tmp").exists());
    }
}
