//! Shared by the DDS tests: finding and running tools/dds_peer.py.
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether python3 can import the peer's packages. When it cannot: prints why and returns false,
/// or panics when `YOLACT_REQUIRE_DDS=1`.
pub fn peer_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import cyclonedds, rosbags"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return true;
    }
    let why = "python3 cannot import cyclonedds and rosbags \
               (pip install cyclonedds==11.0.1 rosbags==0.11.9)";
    if std::env::var("YOLACT_REQUIRE_DDS").is_ok_and(|v| v == "1") {
        panic!("{why} (YOLACT_REQUIRE_DDS=1)");
    }
    eprintln!("SKIPPED: {why}; set YOLACT_REQUIRE_DDS=1 to make this a failure");
    false
}

/// A DDS domain of its own per test process (and per `offset`), so parallel test binaries and
/// other users of the machine do not see each other's topics. Domains above 200 would run out of
/// UDP ports (7400 + 250 * domain).
pub fn test_domain(offset: u16) -> u16 {
    if let Ok(d) = std::env::var("YOLACT_TEST_DDS_DOMAIN") {
        if let Ok(d) = d.parse() {
            return d;
        }
    }
    20 + ((std::process::id() as u16).wrapping_add(offset * 37)) % 160
}

pub struct Peer {
    child: Child,
    // Drained while the peer runs, so a chatty peer never blocks on a full pipe.
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

pub struct PeerRun {
    /// The peer's JSON lines.
    pub lines: Vec<serde_json::Value>,
    pub stderr: String,
    pub ok: bool,
}

pub fn run_peer(args: &[&str]) -> Peer {
    let mut child = Command::new("python3")
        .arg(repo().join("tools/dds_peer.py"))
        .args(args)
        .arg("--msg-dir")
        .arg(repo().join("msg"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3 tools/dds_peer.py");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    Peer {
        child,
        stdout,
        stderr,
    }
}

impl Peer {
    /// Waits for the peer to exit (killing it after `timeout`) and parses its output.
    pub fn wait(mut self, timeout: Duration) -> PeerRun {
        let deadline = Instant::now() + timeout;
        let mut timed_out = false;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("poll peer") {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                timed_out = true;
                break self.child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = self.stdout.join().unwrap_or_default();
        let mut err = self.stderr.join().unwrap_or_default();
        if timed_out {
            err.push_str("\n[peer killed after the timeout]");
        }
        let lines = out
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        PeerRun {
            lines,
            stderr: err,
            ok: !timed_out && status.is_some_and(|s| s.success()),
        }
    }
}
