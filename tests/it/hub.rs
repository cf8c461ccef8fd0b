//! `--weights <released name>` against a local server that answers like the Hugging Face hub's
//! file endpoints (`/{repo}/resolve/main/{file}` with the `etag`, `x-repo-commit` and
//! `Content-Range` headers hf-hub reads, and ranged GETs), serving a synthetic checkpoint in the
//! released layout: the first run downloads into `$HF_HOME`, the second needs no server, and with
//! neither a cache nor a server the error names the URL and what to do.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::support::{fixture, text, yolact_cmd};
use yolact_ros2::weights::{hub, save_safetensors, synth};
use yolact_ros2::YolactConfig;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// Serves `body` at `path` until the test ends; counts the requests it answered with data.
fn serve(path: String, body: Arc<Vec<u8>>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let (path, body, counter) = (path.clone(), body.clone(), counter.clone());
            std::thread::spawn(move || answer(stream, &path, &body, &counter));
        }
    });
    (addr, hits)
}

fn answer(mut stream: TcpStream, path: &str, body: &[u8], hits: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = v.trim().strip_prefix("bytes=").map(str::to_owned);
            }
        }
    }
    let target = request.split_whitespace().nth(1).unwrap_or("");
    if target != path {
        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n");
        return;
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let n = body.len();
    let (start, end) = match range.as_deref().and_then(|r| r.split_once('-')) {
        Some((a, b)) => (
            a.parse().unwrap_or(0),
            b.parse().map(|e: usize| e.min(n - 1)).unwrap_or(n - 1),
        ),
        None => (0, n - 1),
    };
    let part = &body[start..=end];
    let head = format!(
        "HTTP/1.1 206 Partial Content\r\netag: \"synthetic-etag\"\r\nx-repo-commit: {COMMIT}\r\n\
         content-range: bytes {start}-{end}/{n}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        part.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(part);
}

fn infer(home: &Path, endpoint: &str, out: &Path) -> std::process::Output {
    yolact_cmd()
        .args([
            "infer",
            "--weights",
            "yolact_resnet50",
            "--device",
            "cpu",
            "--json",
        ])
        .arg(out)
        .arg(fixture("parity/test_image.png"))
        .env("HF_HOME", home)
        .env("HF_ENDPOINT", endpoint)
        .env_remove("HF_TOKEN")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn released_weights_download_once_then_load_from_the_cache() {
    let release = hub::released("yolact_resnet50").unwrap();
    let cfg = YolactConfig::by_name(release.config).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("served.safetensors");
    save_safetensors(&synth::synth_state_dict(&cfg, 11).unwrap(), &ckpt).unwrap();
    let served = Arc::new(std::fs::read(&ckpt).unwrap());
    let (endpoint, hits) = serve(
        format!("/{}/resolve/main/{}", release.repo, release.file),
        served.clone(),
    );
    let home = dir.path().join("hf_home");

    let first = infer(&home, &endpoint, &dir.path().join("a.json"));
    assert!(first.status.success(), "{}", text(&first));
    assert!(
        hits.load(Ordering::SeqCst) >= 2,
        "metadata and data requests"
    );
    // The standard cache layout, with the served bytes under the file's own name.
    let cached = home
        .join("hub/models--dbolya--yolact-resnet50/snapshots")
        .join(COMMIT)
        .join(release.file);
    assert_eq!(std::fs::read(&cached).unwrap(), *served);

    // No server at all now: the cache answers.
    let before = hits.load(Ordering::SeqCst);
    let second = infer(&home, "http://127.0.0.1:9", &dir.path().join("b.json"));
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(hits.load(Ordering::SeqCst), before);
    let a = std::fs::read_to_string(dir.path().join("a.json")).unwrap();
    let b = std::fs::read_to_string(dir.path().join("b.json")).unwrap();
    assert_eq!(a, b, "the same weights give the same detections");

    // Neither a cache nor a server: a clear error with the URL and the way out.
    let fresh = dir.path().join("empty_home");
    let third = infer(&fresh, "http://127.0.0.1:9", &dir.path().join("c.json"));
    assert!(!third.status.success());
    let msg = text(&third);
    assert!(
        msg.contains(&format!(
            "http://127.0.0.1:9/dbolya/yolact-resnet50/resolve/main/{}",
            release.file
        )),
        "{msg}"
    );
    assert!(msg.contains("pass its path to --weights"), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");
}
