//! The TLS client configuration: trusted roots (system store plus `tls_ca_file`) and the
//! optional client certificate.

use crate::config::Config;

/// Why the TLS configuration could not be built (a file, a certificate, no roots).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TlsSetupError(String);

/// The TLS connector for a `rediss://` URL.
///
/// # Errors
/// Unreadable or empty certificate files, a bad client key, or no trusted root at all.
pub(crate) fn tls_connector(
    config: &Config,
) -> Result<fred::types::config::TlsConnector, TlsSetupError> {
    let ca_file = config.tls_ca_file.as_deref();
    use fred::rustls::pki_types::CertificateDer;
    use fred::rustls::pki_types::pem::PemObject;
    let mut roots = fred::rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| TlsSetupError(format!("tls_ca_file {}: {e}", path.display())))?
            .collect::<Result<_, _>>()
            .map_err(|e| TlsSetupError(format!("tls_ca_file {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(TlsSetupError(format!(
                "tls_ca_file {}: no PEM certificate in it",
                path.display()
            )));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| TlsSetupError(format!("tls_ca_file {}: {e}", path.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(TlsSetupError(
            "no trusted CA certificates (system store empty and no tls_ca_file)".to_string(),
        ));
    }
    let builder = fred::rustls::ClientConfig::builder().with_root_certificates(roots);
    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => {
            use fred::rustls::pki_types::PrivateKeyDer;
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| TlsSetupError(format!("tls_cert_file {}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| TlsSetupError(format!("tls_key_file {}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsSetupError(format!("tls_cert_file: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(fred::types::config::TlsConnector::from(tls))
}

/// Whether the server at `server` (`host:port`) answers a plain `PING` in Redis protocol
/// within `timeout`: then it is a plaintext Redis, not a TLS one (a TLS server answers such
/// bytes with an alert record or closes).
pub(crate) async fn speaks_plain_redis(server: &str, timeout: std::time::Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(server).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut first = [0u8; 1];
        let n = stream.read(&mut first).await.ok()?;
        Some(n == 1 && matches!(first[0], b'+' | b'-'))
    };
    tokio::time::timeout(timeout, probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
