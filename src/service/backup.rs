//! Backup and restore at the edges, the same for both services: `GET /api/v1/backup`
//! (admin), which streams a consistent backup of the running service while it keeps
//! taking writes, and the `backup` and `restore` commands of both CLIs. The format, its
//! checks and the restore itself are `hydra_core::backup`, below HTTP.

use super::{Admin, ApiError, ServiceState};
use crate::service::client::{describe, Client};
use anyhow::{anyhow, bail, Context};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderName};
use axum::response::{IntoResponse, Response};
use clap::Args;
use hydra_core::backup::{self, Extras, Header, Summary};
use hydra_core::store::StoreError;
use hydra_projections::Projection;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The seq and digest the backup recorded, also in the response's headers (for curl).
pub const SEQ_HEADER: HeaderName = HeaderName::from_static("x-hydra-backup-seq");
pub const DIGEST_HEADER: HeaderName = HeaderName::from_static("x-hydra-backup-digest");

/// What the compressor hands the body at a time.
const CHUNK: usize = 64 * 1024;

/// `GET /api/v1/backup` for `service` (the program the backup's header names).
pub fn route<S: ServiceState>(service: &'static str) -> axum::routing::MethodRouter<S> {
    axum::routing::get(move |State(state): State<S>, _: Admin| stream(state, service))
}

/// The backup as a streamed body. The seq and digest come from one read of the live
/// views (so they agree), the tokens and meta right after; then a blocking task reads
/// events 1..=seq from the store, which the writer only ever appends to, so they are
/// the same however long the transfer takes, and compresses them into the body, a
/// chunk at a time as the client takes them. Nothing is held locked while it streams
/// and the writer never waits for it; the file is never whole in memory.
#[utoipa::path(
    get,
    path = "/api/v1/backup",
    tag = "backup",
    security(("admin" = []), ("console_session" = [])),
    responses((status = 200, description = "A consistent backup (docs/backup.md), streamed; its seq and digest also in x-hydra-backup-seq and x-hydra-backup-digest", content_type = "application/gzip", body = Vec<u8>))
)]
pub(crate) async fn stream<S: ServiceState>(state: S, service: &'static str) -> Result<Response, ApiError> {
    let taken = state.clone();
    let (header, extras) = tokio::task::spawn_blocking(move || {
        let (seq, digest) = taken.digest();
        let extras = Extras::read(taken.store())?;
        Ok::<_, StoreError>((Header::new::<S::Views>(service, seq, digest), extras))
    })
    .await
    .map_err(ApiError::internal)??;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    let store = state.store().clone();
    let written = header.clone();
    let runtime = tokio::runtime::Handle::current();
    let chunks = Chunks { tx: tx.clone(), stopping: state.stopping(), runtime };
    tokio::task::spawn_blocking(move || {
        match backup::write_backup(
            &store,
            &written,
            &extras,
            std::io::BufWriter::with_capacity(CHUNK, chunks),
        ) {
            Ok(s) => tracing::info!(seq = s.events, tokens = s.tokens, outputs = s.outputs, "backup sent"),
            Err(e) => {
                tracing::warn!(error = %e, seq = written.seq, "backup not sent whole");
                // The body ends in an error, so the client sees a broken transfer; when
                // the client is too far behind to take it, the file it has lacks the
                // trailer, and reading it back says so.
                let _ = tx.try_send(Err(std::io::Error::other(e.to_string())));
            }
        }
    });
    let headers = [
        (header::CONTENT_TYPE, "application/gzip".to_owned()),
        (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{service}-{}.backup.gz\"", header.seq)),
        (SEQ_HEADER, header.seq.to_string()),
        (DIGEST_HEADER, header.digest.clone()),
    ];
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((headers, body).into_response())
}

/// The body's side of the backup writer: each write becomes a chunk of the response,
/// waiting while the client is behind. A client that went away ends the backup, and so
/// does a server that stops, even while it waits for a stalled client.
struct Chunks {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    stopping: tokio::sync::watch::Receiver<bool>,
    runtime: tokio::runtime::Handle,
}

impl Write for Chunks {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let chunk = Ok(Bytes::copy_from_slice(buf));
        let (tx, stopping) = (&self.tx, &mut self.stopping);
        self.runtime.block_on(async {
            tokio::select! {
                sent = tx.send(chunk) => sent.map_err(|_| {
                    std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
                }),
                _ = stopping.wait_for(|s| *s) => Err(std::io::Error::other("the server is stopping")),
            }
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write (refused if it exists). It is written as FILE.partial and
    /// renamed once read back whole.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Back up this data dir offline (its server stopped) instead of asking the server.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
}

/// `backup` as each CLI takes it: the file, and that CLI's own server and token options.
#[derive(Debug, Args)]
pub struct BackupCommand<C: Args> {
    #[command(flatten)]
    pub backup: BackupArgs,
    #[command(flatten)]
    pub client: C,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file.
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// The data dir to restore into: a new or an empty directory.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
}

/// `backup`: from the running server (`client`), or offline with `--data`. The file is
/// read back and checked whole before it takes its name; then the seq and digest it
/// recorded are printed.
pub async fn backup_cmd<P: Projection>(
    service: &'static str,
    args: &BackupArgs,
    client: impl FnOnce() -> anyhow::Result<Client>,
) -> anyhow::Result<()> {
    let out = &args.out;
    if out.exists() {
        bail!("{} exists: name a new file", out.display());
    }
    let mut partial = out.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = match &args.data {
        Some(data) => {
            let (data, to) = (data.clone(), partial.clone());
            tokio::task::spawn_blocking(move || offline::<P>(service, &data, &to)).await?
        }
        None => match client() {
            Ok(client) => download(&client, &partial).await,
            Err(e) => Err(e),
        },
    }
    .and_then(|()| verify(service, &partial));
    let summary = match written {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context("no backup written"));
        }
    };
    std::fs::rename(&partial, out).with_context(|| format!("naming the backup {}", out.display()))?;
    println!(
        "backup written to {}: events 1..={}, {} node tokens, {} command outputs",
        out.display(),
        summary.events,
        summary.tokens,
        summary.outputs
    );
    println!("seq: {}\ndigest: {}", summary.header.seq, summary.header.digest);
    Ok(())
}

fn offline<P: Projection>(service: &str, data: &Path, to: &Path) -> anyhow::Result<()> {
    let file = create_new(to)?;
    backup::backup_offline::<P>(data, service, std::io::BufWriter::new(&file)).map_err(|e| match &e {
        // A damaged log or one in another layout: say what to do, as `serve` would.
        backup::BackupError::Store(store) => match hydra_core::repair::refusal(data, service, store) {
            Some(message) => anyhow::anyhow!(message),
            None => anyhow::Error::new(e),
        },
        _ => anyhow::Error::new(e),
    })?;
    file.sync_all()?;
    Ok(())
}

/// Streams the server's backup into `to`; each read of the body must come within the
/// client's timeout, the whole may take as long as it needs.
async fn download(client: &Client, to: &Path) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut resp = client.stream("/api/v1/backup").await?;
    let mut file = tokio::fs::File::from_std(create_new(to)?);
    let idle = client.request_timeout();
    loop {
        let chunk = tokio::time::timeout(idle, resp.chunk())
            .await
            .map_err(|_| anyhow!("the server sent nothing for {}", humantime::format_duration(idle)))?
            .map_err(|e| anyhow!("the transfer broke: {}", describe(&e)))?;
        match chunk {
            Some(bytes) => file.write_all(&bytes).await?,
            None => break,
        }
    }
    file.sync_all().await?;
    Ok(())
}

/// A new file only the owner can read: a backup holds the node token hashes.
fn create_new(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// Reads a backup file back whole, with every check a restore makes before it writes.
fn verify(service: &str, path: &Path) -> anyhow::Result<Summary> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let summary = backup::read_backup(std::io::BufReader::new(file), |_| Ok(()), |_| Ok(()))
        .with_context(|| format!("reading {} back", path.display()))?;
    if summary.header.service != service {
        bail!("the server sent a backup of {}, not of {service}", summary.header.service);
    }
    Ok(summary)
}

/// `restore --from FILE --data DIR` (see `hydra_core::backup::restore`): says what it
/// restored and the digest, which `audit` and the restored server's
/// `GET /api/v1/audit/digest` then give too.
pub fn restore_cmd<P: Projection>(service: &str, args: &RestoreArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.from).with_context(|| format!("opening {}", args.from.display()))?;
    let r = backup::restore::<P>(std::io::BufReader::new(file), &args.data, service)
        .with_context(|| format!("nothing restored from {}", args.from.display()))?;
    let s = &r.summary;
    println!(
        "restored {} into {}: events 1..={}, {} node tokens, {} command outputs, chain and checksum verified",
        args.from.display(),
        args.data.display(),
        s.events,
        s.tokens,
        s.outputs
    );
    println!("seq: {}\ndigest: {}", s.header.seq, r.digest);
    if r.digest_compared {
        println!("the digest equals the one the backup recorded");
    } else {
        println!(
            "the backup's views are version {} and this build's {}: its digest ({}) cannot be compared",
            s.header.views_version,
            P::VERSION,
            s.header.digest
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hydra_core::ledger::{Decision, Ledger, LedgerConfig};
    use hydra_events::{Event, NodeId};
    use hydra_projections::ClusterViews;

    /// A whole backup of a log of five enrollments.
    async fn a_backup() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let store = hydra_core::store::Store::open(dir.path()).unwrap();
        let config = LedgerConfig { min_free_bytes: 0, ..LedgerConfig::default() };
        let ledger = Ledger::<ClusterViews>::open(store, config).unwrap();
        for i in 0..5 {
            let node_id = NodeId::parse(&format!("node-{i}")).unwrap();
            let event = Event::NodeEnrolled { node_id, name: format!("b{i}"), ip: "10.0.0.1".into() };
            ledger.submit("test", move |_| Ok(Decision::events(vec![event]))).await.unwrap();
        }
        let (seq, digest) = ledger.read(|v| (v.last_seq(), hydra_projections::digest(v)));
        let header = Header::new::<ClusterViews>("hydracluster", seq, digest);
        let mut out = Vec::new();
        backup::write_backup(ledger.store(), &header, &Extras::default(), &mut out).unwrap();
        out
    }

    /// A stand-in server whose `/api/v1/backup` sends the first `cut` bytes of `file`,
    /// then ends the body cleanly or with an error.
    async fn server_sending(file: Vec<u8>, cut: usize, then_fail: bool) -> String {
        let app = axum::Router::new().route(
            "/api/v1/backup",
            axum::routing::get(move || async move {
                let mut parts: Vec<std::io::Result<Bytes>> = vec![Ok(Bytes::copy_from_slice(&file[..cut]))];
                if then_fail {
                    parts.push(Err(std::io::Error::other("the log failed")));
                }
                Body::from_stream(futures_util::stream::iter(parts))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    #[tokio::test]
    async fn a_transfer_cut_short_leaves_no_file_whether_the_body_breaks_or_ends() {
        let file = a_backup().await;
        let dir = tempfile::tempdir().unwrap();
        // A body that breaks fails the transfer (before or after its head arrived,
        // as hyper finds it); one that ends early is caught reading the file back.
        let broke: &[&str] = &["the transfer broke", "connection closed before message completed"];
        for (then_fail, says) in [(true, broke), (false, &["the backup is truncated"][..])] {
            let url = server_sending(file.clone(), file.len() / 2, then_fail).await;
            let args = BackupArgs { out: dir.path().join("b.gz"), data: None };
            let client = || Ok(Client::new(&url, Some("t".into()), crate::service::client::Timeouts::CLI));
            let err =
                format!("{:#}", backup_cmd::<ClusterViews>("hydracluster", &args, client).await.unwrap_err());
            assert!(says.iter().any(|s| err.contains(s)), "{err}");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a file was left");
        }
        // The whole file is taken, and another service's is not.
        let url = server_sending(file.clone(), file.len(), false).await;
        let args = BackupArgs { out: dir.path().join("b.gz"), data: None };
        let client = || Ok(Client::new(&url, Some("t".into()), crate::service::client::Timeouts::CLI));
        let err = backup_cmd::<ClusterViews>("hydraexperiencelibrary", &args, client).await.unwrap_err();
        assert!(
            format!("{err:#}").contains("a backup of hydracluster, not of hydraexperiencelibrary"),
            "{err:#}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        backup_cmd::<ClusterViews>("hydracluster", &args, client).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("b.gz")).unwrap(), file);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backup_waiting_on_a_stalled_client_ends_when_the_server_stops() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let mut chunks = Chunks { tx, stopping, runtime: tokio::runtime::Handle::current() };
        let writer = tokio::task::spawn_blocking(move || {
            chunks.write_all(b"first")?;
            // The channel is full and the client reads nothing: this waits.
            chunks.write_all(b"second")
        });
        while rx.is_empty() {
            tokio::task::yield_now().await;
        }
        stop.send(true).unwrap();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(20), writer).await;
        let error = ended.expect("the writer still waits on the client").unwrap().unwrap_err();
        assert_eq!(error.to_string(), "the server is stopping");
        assert_eq!(rx.len(), 1);
    }
}
