//! A test CA and certificates made with `openssl` (X.509 v3, EC P-256), and a
//! TLS-enabled redis-server: the daemon connects to `--tls-port`; the harness
//! keeps a plain port bound to 127.0.0.1 for its own checks.

use super::{Aof, RedisServer, free_port};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Files of a generated PKI (in a tempdir that lives as long as this value).
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A second, unrelated CA (for "wrong CA" cases).
    pub other_ca_cert: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=event-worker test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

fn leaf(dir: &Path, name: &str, cn: &str, ext: &str) {
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

impl Pki {
    /// CA, server cert (SAN `DNS:localhost, IP:127.0.0.1`), client cert, other CA.
    pub fn generate() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ca(d, "ca");
        ca(d, "other");
        leaf(
            d,
            "server",
            "localhost",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        );
        leaf(
            d,
            "client",
            "event-worker-client",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=clientAuth\n",
        );
        for f in ["server.key", "client.key"] {
            let p = d.join(f);
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Pki {
            ca_cert: d.join("ca.crt"),
            server_cert: d.join("server.crt"),
            server_key: d.join("server.key"),
            client_cert: d.join("client.crt"),
            client_key: d.join("client.key"),
            other_ca_cert: d.join("other.crt"),
            dir,
        }
    }
}

/// A redis-server with a TLS port (and the harness's plain port).
pub struct TlsRedis {
    pub redis: RedisServer,
    pub tls_port: u16,
}

/// Starts redis-server with `--tls-port` (certificates from `pki`);
/// `auth_clients`: `--tls-auth-clients yes|no`.
pub fn start_tls_redis(pki: &Pki, auth_clients: bool, password: Option<&str>) -> TlsRedis {
    let tls_port = free_port();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = vec![
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        s(&pki.server_cert),
        "--tls-key-file".into(),
        s(&pki.server_key),
        "--tls-ca-cert-file".into(),
        s(&pki.ca_cert),
        "--tls-auth-clients".into(),
        if auth_clients { "yes" } else { "no" }.into(),
    ];
    let redis = RedisServer::start_with_args(Aof::Always, password.map(str::to_string), args);
    TlsRedis { redis, tls_port }
}
