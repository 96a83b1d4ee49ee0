//! One self-signed certificate for every peer, and the client configs that trust it.
//!
//! Every proxy in a comparison serves the same ECDSA P-256 certificate (the kind `stacklab up`
//! makes), so the handshake costs compare like with like. Clients trust exactly that
//! certificate. Session resumption is off in the client so that "new TLS connections" measures
//! full handshakes on every peer.

use rustls::client::Resumption;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Errors making or reading the certificate.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the certificate {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("the client TLS config: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A certificate and key written as PEM files, plus a combined file for HAProxy.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Certificate then key, in one file (HAProxy's `crt`).
    pub combined: PathBuf,
}

/// Makes a self-signed certificate for `localhost` and `127.0.0.1` in `dir`.
pub fn generate(dir: &Path) -> Result<CertFiles, TlsError> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names)?;
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    let files = CertFiles {
        cert: dir.join("bench.crt"),
        key: dir.join("bench.key"),
        combined: dir.join("bench.pem"),
    };
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|source| TlsError::Write {
            path: path.to_owned(),
            source,
        })
    };
    write(&files.cert, &cert_pem)?;
    write(&files.key, &key_pem)?;
    write(&files.combined, &format!("{cert_pem}{key_pem}"))?;
    Ok(files)
}

/// A client config that trusts the certificate in `cert` and offers `alpn`.
pub fn client_config(cert: &Path, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
    let read_err = |message: String| TlsError::Read {
        path: cert.to_owned(),
        message,
    };
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).map_err(|e| read_err(e.to_string()))? {
        let c = c.map_err(|e| read_err(e.to_string()))?;
        roots.add(c)?;
    }
    let mut cfg = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg.resumption = Resumption::disabled();
    Ok(Arc::new(cfg))
}
