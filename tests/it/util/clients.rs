//! Real client programs in other languages: Python (with `requests` and the CloudEvents SDK)
//! and Node (with the CloudEvents SDK), installed by `scripts/ensure-deps.sh` into
//! `tests/clients/` at the versions pinned there. A missing install fails the test with the
//! command that installs it; it never skips.

use std::path::PathBuf;
use std::process::{Command, Output};

fn clients_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

fn require(path: PathBuf) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/ensure-deps.sh (it installs tests/clients)",
        path.display()
    );
    path
}

/// Runs `script` with the venv's Python 3 (`requests`, `cloudevents` importable); `args`
/// follow as `sys.argv[1..]`.
pub fn python(script: &str, args: &[&str]) -> Output {
    let python = require(clients_dir().join(".venv/bin/python"));
    Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python")
}

/// Runs `script` with Node, resolving modules (`cloudevents`) from `tests/clients/node_modules`;
/// `args` follow as `process.argv[1..]` (`node -e` has no script path).
pub fn node(script: &str, args: &[&str]) -> Output {
    let modules = require(clients_dir().join("node_modules"));
    Command::new("node")
        .env("NODE_PATH", modules)
        .arg("-e")
        .arg(script)
        .arg("--")
        .args(args)
        .output()
        .expect("run node")
}
