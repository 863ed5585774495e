//! Role artifacts for provisioning tests: a tarball with an install script, and a
//! local server that serves it (or stalls).

use axum::body::{Body, Bytes};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Builds `<dir>/<name>.tar.gz` holding an install script that writes a marker.
pub fn tarball(dir: &Path, name: &str) -> (Vec<u8>, String) {
    let src = dir.join(format!("src-{name}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("payload.txt"), format!("payload {name}\n")).unwrap();
    std::fs::write(src.join("install.sh"), format!("echo {name} > installed-marker\n")).unwrap();
    let out = dir.join(format!("{name}.tar.gz"));
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(&src)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&out).unwrap();
    let sha: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    (bytes, sha)
}

/// Serves `/a.tar.gz` (the bytes given) and `/stall.tar.gz` (a first chunk, then
/// nothing, forever). Returns its base URL.
pub async fn artifact_server(bytes: Vec<u8>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/a.tar.gz", get(move || async move { bytes.clone() })).route(
        "/stall.tar.gz",
        get(|| async {
            use futures_util::StreamExt;
            let first = futures_util::stream::once(async {
                Ok::<_, std::io::Error>(Bytes::from_static(&[0x1f, 0x8b]))
            });
            Body::from_stream(first.chain(futures_util::stream::pending()))
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}
