//! A self-signed certificate for a TLS redis-server, made in the test.

use std::path::{Path, PathBuf};

/// PEM files of a self-signed certificate for `127.0.0.1` / `localhost`.
#[derive(Debug)]
pub struct TlsFiles {
    /// The certificate (also used as the CA).
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// Writes a fresh self-signed certificate and key into `dir`.
pub fn self_signed(dir: &Path) -> TlsFiles {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let certified = rcgen::generate_simple_self_signed(names)
        .unwrap_or_else(|e| panic!("generate certificate: {e}"));
    let cert = dir.join("redis.crt");
    let key = dir.join("redis.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap_or_else(|e| panic!("write cert: {e}"));
    std::fs::write(&key, certified.signing_key.serialize_pem())
        .unwrap_or_else(|e| panic!("write key: {e}"));
    TlsFiles { cert, key }
}
