//! Lib tests' real `redis-server` (no mocks): a process on a free loopback port, with
//! nothing saved, killed on drop; optionally a replica of another.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real redis-server on a free loopback port, killed on drop.
pub(crate) struct Redis {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// A standalone server.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// A server replicating `master`, once its link to the master is up.
    pub fn replica_of(master: &Redis) -> Redis {
        let replica = Redis::start_with(&["--replicaof", "127.0.0.1", &master.port.to_string()]);
        replica.wait_for(
            |info| info.contains("master_link_status:up"),
            "INFO replication",
        );
        replica
    }

    /// A server started with `extra` arguments.
    fn start_with(extra: &[&str]) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let dir = tempfile::tempdir().expect("a temp dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--repl-diskless-sync-delay",
                "0",
            ])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            port,
            child,
            _dir: dir,
        }
    }

    /// The `redis://` URL of this server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` with `args` against this server: its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `INFO <section>` (every 20 ms, at most 10 s) until `ready` holds.
    fn wait_for(&self, ready: impl Fn(&str) -> bool, what: &str) {
        let section = what.trim_start_matches("INFO ");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready(&self.cli(&["INFO", section])) {
            assert!(Instant::now() < deadline, "{what} never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops (`SIGSTOP`) or resumes (`SIGCONT`) the process.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {signal} redis-server");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        // SIGKILL ends a stopped process too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
