//! Built-in TLS for the HTTP listener. It owns the server's certificate chain and private
//! key: reading them from PEM files (size-capped, typed errors), the rustls configuration
//! (aws-lc-rs provider, HTTP/1.1 only, no client certificates), and swapping in a new pair
//! on reload: new handshakes use the new pair, open connections keep the one they began
//! with, and a pair that fails to load leaves the old one serving.
//!
//! The listener (`listener.rs`) decides when a connection speaks TLS and bounds the
//! handshake; this module only knows certificates.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Largest certificate or key file read, in bytes: a chain of a dozen certificates fits
/// many times over; a path pointing at something else entirely is refused early.
pub const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// Where the certificate chain and its private key live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server's certificate first, then any intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file could not be opened or read.
    #[error("cannot read http.{what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_PEM_BYTES`].
    #[error("http.{what} {path} is larger than {MAX_PEM_BYTES} bytes: not a PEM file")]
    TooLarge { what: &'static str, path: PathBuf },
    /// The file is not PEM, or holds no section of the kind wanted.
    #[error("http.{what} {path}: {message}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    /// The key is not the one the first certificate was issued for.
    #[error("http.tls_key {key} is not the private key of the certificate in http.tls_cert {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// rustls refused the pair otherwise (an unsupported key type, say).
    #[error("http.tls_cert {cert} and http.tls_key {key} cannot be used together: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// The listener's TLS: a rustls acceptor whose certificate can be replaced at run time.
/// Cheap to clone.
#[derive(Clone)]
pub struct Tls(Arc<Inner>);

struct Inner {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    resolver: Arc<Resolver>,
    acceptor: tokio_rustls::TlsAcceptor,
    reloads: AtomicU64,
    reload_failures: AtomicU64,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.0.files).finish()
    }
}

impl Tls {
    /// Read `files` and build the acceptor; an error says which file and why.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = certified_key(&files, &provider)?;
        let resolver = Arc::new(Resolver(RwLock::new(Arc::new(key))));
        let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::Pair {
                cert: files.cert.clone(),
                key: files.key.clone(),
                source,
            })?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        // The listener speaks HTTP/1.1 (WebSockets upgrade from it); offering h2 would
        // make clients that prefer it fail.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls(Arc::new(Inner {
            files,
            provider,
            resolver,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        })))
    }

    /// Read the files again and serve the new pair from the next handshake on. On error the
    /// pair in use stays, and the error says why the new one was refused.
    pub fn reload(&self) -> Result<(), TlsError> {
        match certified_key(&self.0.files, &self.0.provider) {
            Ok(key) => {
                *self.0.resolver.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(key);
                self.0.reloads.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.0.reload_failures.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The files this serves.
    pub fn files(&self) -> &TlsFiles {
        &self.0.files
    }

    /// The acceptor handshakes go through.
    pub fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.0.acceptor
    }

    /// A JSON snapshot for `/stats`.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "reloads": self.0.reloads.load(Ordering::Relaxed),
            "reload_failures": self.0.reload_failures.load(Ordering::Relaxed),
        })
    }
}

/// Hands every handshake the pair in use now.
#[derive(Debug)]
struct Resolver(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A write holds the lock for one pointer swap; a poisoned lock still holds a
        // whole Arc.
        Some(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}

/// The pair in `files`, checked by rustls (the key must match the first certificate).
fn certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let cert_pem = read_capped("tls_cert", &files.cert)?;
    let key_pem = read_capped("tls_key", &files.key)?;
    let pem_error = |what: &'static str, path: &Path, message: String| TlsError::Pem {
        what,
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("tls_cert", &files.cert, format!("not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(pem_error(
            "tls_cert",
            &files.cert,
            "holds no CERTIFICATE section".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let message = match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "holds no PRIVATE KEY section (PKCS#8, RSA or EC)".to_owned()
            }
            e => format!("not valid PEM: {e}"),
        };
        pem_error("tls_key", &files.key, message)
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| match source {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            }
        }
        source => TlsError::Pair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        },
    })
}

/// The whole of `path`, if it is at most [`MAX_PEM_BYTES`].
fn read_capped(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_error = |source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            what,
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("manifold-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn missing_files_name_the_setting_and_path() {
        let d = dir("missing");
        let files = TlsFiles {
            cert: d.join("nope.pem"),
            key: d.join("nope.key"),
        };
        let e = Tls::load(files).unwrap_err().to_string();
        assert!(e.contains("cannot read http.tls_cert"), "{e}");
        assert!(e.contains("nope.pem"), "{e}");
    }

    #[test]
    fn non_pem_and_empty_files_are_refused_with_reasons() {
        let d = dir("garbage");
        let cert = write(&d, "cert.pem", b"hello, I am not a certificate\n");
        let key = write(&d, "key.pem", b"");
        let e = Tls::load(TlsFiles {
            cert: cert.clone(),
            key,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("holds no CERTIFICATE section"), "{e}");
        let broken = write(
            &d,
            "broken.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n", // no END line
        );
        let e = Tls::load(TlsFiles {
            cert: broken,
            key: cert,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("not valid PEM"), "{e}");
    }

    #[test]
    fn oversized_files_are_not_read_whole() {
        let d = dir("large");
        let big = write(&d, "big.pem", &vec![b'A'; MAX_PEM_BYTES as usize + 1]);
        let e = Tls::load(TlsFiles {
            cert: big.clone(),
            key: big,
        })
        .unwrap_err();
        assert!(matches!(e, TlsError::TooLarge { .. }), "{e}");
    }
}
