//! TLS for the edge: certificates from config chosen by SNI, or a self-signed one made at first
//! start and kept in the data dir.
//!
//! One [`CertResolver`] serves both TCP (TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`) and QUIC
//! (TLS 1.3, ALPN `h3`). It holds its certificates behind an `ArcSwap`, so a reload swaps them
//! for new handshakes while open connections keep theirs.

use crate::config::{CertificateConfig, Config};
use arc_swap::ArcSwap;
use rustls::crypto::ring;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("could not make a self-signed certificate: {0}")]
    Generate(String),
    #[error("TLS set-up failed: {0}")]
    Rustls(#[from] rustls::Error),
}

#[derive(Debug, Default)]
struct Certs {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

/// Picks the certificate for a handshake by SNI; unknown or absent names get the default.
#[derive(Debug, Default)]
pub struct CertResolver {
    certs: ArcSwap<Certs>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        hello
            .server_name()
            .and_then(|n| certs.by_name.get(&n.to_ascii_lowercase()).cloned())
            .or_else(|| certs.default.clone())
    }
}

impl CertResolver {
    /// Loads the configured certificates (or the self-signed one) and installs them.
    pub fn load(&self, cfg: &Config) -> Result<(), TlsError> {
        let provider = ring::default_provider();
        let mut certs = Certs::default();
        let configured: Vec<CertificateConfig> = if cfg.edge.certificates.is_empty() {
            vec![self_signed(&cfg.data_dir)?]
        } else {
            cfg.edge.certificates.clone()
        };
        for c in &configured {
            let chain = CertificateDer::pem_file_iter(&c.cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| TlsError::File {
                    path: c.cert.clone(),
                    message: format!("not a PEM certificate chain: {e}"),
                })?;
            if chain.is_empty() {
                return Err(TlsError::File {
                    path: c.cert.clone(),
                    message: "holds no certificate".into(),
                });
            }
            let key = PrivateKeyDer::from_pem_file(&c.key).map_err(|e| TlsError::File {
                path: c.key.clone(),
                message: format!("not a PEM private key: {e}"),
            })?;
            let signing =
                provider
                    .key_provider
                    .load_private_key(key)
                    .map_err(|e| TlsError::File {
                        path: c.key.clone(),
                        message: format!("unsupported key: {e}"),
                    })?;
            let ck = Arc::new(CertifiedKey::new(chain, signing));
            if certs.default.is_none() {
                certs.default = Some(Arc::clone(&ck));
            }
            for name in &c.server_names {
                certs
                    .by_name
                    .insert(name.to_ascii_lowercase(), Arc::clone(&ck));
            }
        }
        self.certs.store(Arc::new(certs));
        Ok(())
    }
}

/// TLS 1.2 and 1.3 over TCP, ALPN `h2` preferred over `http/1.1`.
pub fn tcp_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// TLS 1.3 for QUIC, ALPN `h3`.
pub fn quic_config(resolver: Arc<CertResolver>) -> Result<quinn::ServerConfig, TlsError> {
    let mut cfg = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = vec![b"h3".to_vec()];
    cfg.max_early_data_size = u32::MAX;
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(cfg)
        .map_err(|e| TlsError::Generate(format!("QUIC TLS config: {e}")))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let transport = Arc::get_mut(&mut server.transport).expect("fresh transport config");
    transport.max_idle_timeout(Some(
        std::time::Duration::from_secs(30)
            .try_into()
            .expect("30 s fits"),
    ));
    Ok(server)
}

/// The self-signed certificate under `<data_dir>/tls/`, made on first use: ECDSA P-256 with
/// SANs `localhost`, `127.0.0.1` and `::1`.
pub fn self_signed(data_dir: &Path) -> Result<CertificateConfig, TlsError> {
    let dir = data_dir.join("tls");
    let cert = dir.join("self-signed.crt");
    let key = dir.join("self-signed.key");
    if !(cert.is_file() && key.is_file()) {
        std::fs::create_dir_all(&dir).map_err(|e| TlsError::File {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        let names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        let made = rcgen::generate_simple_self_signed(names)
            .map_err(|e| TlsError::Generate(e.to_string()))?;
        write_private(&key, made.signing_key.serialize_pem().as_bytes())?;
        std::fs::write(&cert, made.cert.pem()).map_err(|e| TlsError::File {
            path: cert.clone(),
            message: e.to_string(),
        })?;
        tracing::info!(cert = %cert.display(), "made a self-signed certificate for localhost");
    }
    Ok(CertificateConfig {
        server_names: vec!["localhost".into()],
        cert,
        key,
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| TlsError::File {
            path: path.to_owned(),
            message: e.to_string(),
        })
}
