//! HTTPS on the API port, as Wings configures it (`api.ssl`): the certificate chain and key
//! are loaded at start and reloaded when the files change (a certbot renewal), so new
//! handshakes use the new pair while open connections carry on.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::Ssl;

/// How often the files are checked for a change. certbot renews a month before expiry, so
/// minutes would do; a few seconds costs a few `stat` calls and lets an operator see a
/// swapped certificate at once.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(3);

/// The most a PEM file may hold: a chain of a few certificates is a few KiB, so anything
/// past this is not a certificate file and is not read into memory.
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// The only protocol offered in ALPN: the API serves HTTP/1.1 (and its websocket upgrade).
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Why a certificate or key could not be used: names the setting and the file.
#[derive(Debug, thiserror::Error)]
#[error("{setting} {}: {reason}", path.display())]
pub struct LoadError {
    /// `api.ssl.cert` or `api.ssl.key`.
    setting: &'static str,
    /// The file as configured.
    path: PathBuf,
    /// What is wrong with it.
    reason: String,
}

/// HTTPS for the listener: the acceptor the accept loop hands connections to, and the
/// watcher that keeps its certificate current.
pub struct Tls {
    /// Accepts TLS connections with the current certificate.
    pub acceptor: TlsAcceptor,
    /// Reloads the certificate when the files change; run it with [`Reloader::run`].
    pub reloader: Reloader,
}

impl Tls {
    /// Loads the pair `ssl` names; a missing or bad file is an error naming it.
    pub fn load(ssl: &Ssl) -> Result<Self, LoadError> {
        let files = Files {
            cert: ssl.cert.clone(),
            key: ssl.key.clone(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let seen = files.fingerprint()?;
        let certified = files.load(&provider)?;
        let current = Arc::new(CurrentCertificate(RwLock::new(Arc::new(certified))));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("ring's default provider has the suites of TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![ALPN_HTTP_1_1.to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            reloader: Reloader {
                files,
                provider,
                current,
                loaded: seen,
                failing: None,
            },
        })
    }
}

/// The pair being served; swapped whole on reload, so a handshake sees the old pair or the
/// new one, never half of each.
#[derive(Debug)]
struct CurrentCertificate(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        )
    }
}

/// Watches the certificate and key files and swaps in a new pair when they change.
pub struct Reloader {
    /// The configured paths.
    files: Files,
    /// ring, which also loads the keys.
    provider: Arc<CryptoProvider>,
    /// What the acceptor serves.
    current: Arc<CurrentCertificate>,
    /// The files as they were when the pair being served was read.
    loaded: Fingerprint,
    /// The last reload failure logged, so a pair that stays bad is logged once, not at
    /// every check (it is still retried at every check).
    failing: Option<String>,
}

impl Reloader {
    /// Checks the files every [`CHECK_INTERVAL`] until the task is aborted.
    pub async fn run(mut self) {
        let mut ticks = tokio::time::interval(CHECK_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            // stat and read are blocking calls; a slow disk must not stall the runtime.
            self = match tokio::task::spawn_blocking(move || {
                self.check();
                self
            })
            .await
            {
                Ok(reloader) => reloader,
                Err(err) => {
                    tracing::error!("the certificate watcher stopped: {err}");
                    return;
                }
            };
        }
    }

    /// Reloads the pair if the files changed since it was loaded; keeps the old pair (and
    /// logs why, naming the file) if the new one cannot be used.
    fn check(&mut self) {
        let result = self.files.fingerprint().and_then(|seen| {
            if seen == self.loaded {
                return Ok(None);
            }
            Ok(Some((seen, self.files.load(&self.provider)?)))
        });
        match result {
            // Unchanged, or back to the files being served (a bad change undone).
            Ok(None) => self.failing = None,
            Ok(Some((seen, certified))) => {
                *self
                    .current
                    .0
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(certified);
                self.loaded = seen;
                self.failing = None;
                tracing::info!(
                    cert = %self.files.cert.display(),
                    key = %self.files.key.display(),
                    "certificate reloaded; new connections use it"
                );
            }
            Err(err) => {
                let message = err.to_string();
                if self.failing.as_ref() != Some(&message) {
                    tracing::warn!(
                        "{message}; still serving the previous certificate, retrying every {CHECK_INTERVAL:?}"
                    );
                    self.failing = Some(message);
                }
            }
        }
    }
}

/// The two configured files.
struct Files {
    /// `api.ssl.cert`: the chain, leaf first.
    cert: PathBuf,
    /// `api.ssl.key`.
    key: PathBuf,
}

impl Files {
    /// What identifies the files' current content, symlinks followed.
    fn fingerprint(&self) -> Result<Fingerprint, LoadError> {
        Ok(Fingerprint {
            cert: FileState::of(&self.cert).map_err(|reason| cert_error(&self.cert, reason))?,
            key: FileState::of(&self.key).map_err(|reason| key_error(&self.key, reason))?,
        })
    }

    /// Reads the chain and the key and checks that they belong together.
    fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, LoadError> {
        let pem = read_bounded(&self.cert).map_err(|reason| cert_error(&self.cert, reason))?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| cert_error(&self.cert, format!("not a PEM file: {err}")))?;
        if chain.is_empty() {
            return Err(cert_error(
                &self.cert,
                "no CERTIFICATE in it: expected the PEM chain (fullchain.pem)",
            ));
        }
        let pem = read_bounded(&self.key).map_err(|reason| key_error(&self.key, reason))?;
        let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|err| {
            key_error(
                &self.key,
                format!("no PEM private key in it (privkey.pem): {err}"),
            )
        })?;
        let signer = provider
            .key_provider
            .load_private_key(key)
            .map_err(|err| key_error(&self.key, format!("unusable private key: {err}")))?;
        let certified = CertifiedKey::new(chain, signer);
        match certified.keys_match() {
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
                Ok(certified)
            }
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                Err(key_error(
                    &self.key,
                    format!("does not match the certificate in {}", self.cert.display()),
                ))
            }
            Err(err) => Err(cert_error(
                &self.cert,
                format!("the first certificate is not valid: {err}"),
            )),
        }
    }
}

/// An error about `api.ssl.cert`.
fn cert_error(path: &Path, reason: impl Into<String>) -> LoadError {
    LoadError {
        setting: "api.ssl.cert",
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// An error about `api.ssl.key`.
fn key_error(path: &Path, reason: impl Into<String>) -> LoadError {
    LoadError {
        setting: "api.ssl.key",
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The whole file, refused past [`MAX_PEM_BYTES`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|err| err.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| err.to_string())?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "larger than {MAX_PEM_BYTES} bytes: not a PEM certificate or key"
        ));
    }
    Ok(bytes)
}

/// Both files' states.
#[derive(Debug, PartialEq, Eq)]
struct Fingerprint {
    /// The chain's.
    cert: FileState,
    /// The key's.
    key: FileState,
}

/// What changes when a file is rewritten in place (size, mtime) or replaced by another
/// file, through a rename or a symlink swapped as certbot does (device, inode, the path the
/// symlinks lead to).
#[derive(Debug, PartialEq, Eq)]
struct FileState {
    /// The path with every symlink resolved.
    canonical: PathBuf,
    /// Device and inode of the file it leads to.
    id: (u64, u64),
    /// Its size in bytes.
    size: u64,
    /// Its modification time (seconds, nanoseconds).
    modified: (i64, i64),
}

impl FileState {
    /// The state of `path`, following symlinks.
    fn of(path: &Path) -> Result<Self, String> {
        let metadata = std::fs::metadata(path).map_err(|err| err.to_string())?;
        let canonical = std::fs::canonicalize(path).map_err(|err| err.to_string())?;
        Ok(Self {
            canonical,
            id: (metadata.dev(), metadata.ino()),
            size: metadata.size(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two files with the same content and modification time, as a renewal that happened to
    /// produce them would look to a check of size and time alone.
    fn twins(dir: &Path) -> (PathBuf, PathBuf) {
        let (a, b) = (dir.join("fullchain1.pem"), dir.join("fullchain2.pem"));
        std::fs::write(&a, "same bytes\n").unwrap();
        std::fs::write(&b, "same bytes\n").unwrap();
        let modified = std::fs::metadata(&a).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(&b)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        (a, b)
    }

    #[test]
    fn a_symlink_pointed_at_another_file_is_a_change_even_with_the_same_size_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let (_, b) = twins(dir.path());
        let link = dir.path().join("fullchain.pem");
        std::os::unix::fs::symlink("fullchain1.pem", &link).unwrap();
        let before = FileState::of(&link).unwrap();
        // certbot's swap: a new link renamed over the old one.
        std::os::unix::fs::symlink("fullchain2.pem", dir.path().join("new")).unwrap();
        std::fs::rename(dir.path().join("new"), &link).unwrap();
        let after = FileState::of(&link).unwrap();
        assert_ne!(before, after);
        assert_eq!(after.canonical, std::fs::canonicalize(b).unwrap());
        assert_eq!((before.size, before.modified), (after.size, after.modified));
    }

    #[test]
    fn a_file_renamed_over_the_configured_one_is_a_change_even_with_the_same_size_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = twins(dir.path());
        let before = FileState::of(&a).unwrap();
        std::fs::rename(&b, &a).unwrap();
        let after = FileState::of(&a).unwrap();
        assert_ne!(before, after);
        assert_eq!(before.canonical, after.canonical);
    }

    #[test]
    fn an_unchanged_file_is_not_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = twins(dir.path());
        assert_eq!(FileState::of(&a).unwrap(), FileState::of(&a).unwrap());
    }
}
