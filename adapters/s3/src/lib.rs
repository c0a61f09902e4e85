//! aerie's `s3` storage adapter: backups as objects in an S3 (or S3-compatible) bucket,
//! streamed in with a multipart upload as the archive is made, no temporary file.
//!
//! A backup is the object `<prefix><server>/<backup>.tar.gz` (the Panel's own layout), with
//! a sidecar `<key>.json` that records its SHA-1, size, creation time and aerie's version.
//! The adapter owns a small tokio runtime inside the library; the host calls it from
//! blocking threads and its own runtime never crosses the boundary.
//!
//! ```yaml
//! adapters:
//!   - name: s3
//!     library: /usr/lib/aerie/libaerie_adapter_s3.so
//!     config:
//!       bucket: backups
//!       region: eu-west-1
//!       prefix: "node-1/"
//! ```
//!
//! With `config: { mode: panel }` the Panel holds the bucket and its credentials instead
//! (its `APP_BACKUP_DRIVER=s3`, as with Wings): aerie asks it for presigned part URLs, PUTs
//! the parts as the archive is made, and reports them for the Panel to complete the upload.
//! The Panel then restores through a presigned `download_url` and deletes objects itself.
//!
//! Modules: [`config`] (the keys and their checks), `store` (the client and the key
//! layout), `upload` (the multipart sink), `presigned` (the `mode: panel` sink),
//! `url_expiry`, `download` (the source), `cleanup` (aborting uploads), `sidecar`, `error`
//! (SDK errors as adapter errors), `runtime`.

use std::sync::Arc;

use aerie_adapter_api::{
    Adapter, AdapterError, BackupInfo, ErrorKind, HostContext, Services, Sink, StoredBackup,
};
use aws_sdk_s3::types::StorageClass;

pub mod config;

mod cleanup;
mod download;
mod error;
mod presigned;
mod runtime;
mod sidecar;
mod store;
mod upload;
mod upload_state;
mod url_expiry;

pub use download::S3Source;
pub use presigned::PanelSink;
pub use upload::S3Sink;

use config::{Config, Mode};
use error::s3_error;
use presigned::PanelSettings;
use store::{sidecar_key, Store};
use upload::UploadSettings;

/// One configured S3 target.
pub struct S3Adapter {
    /// Where backups go and who holds the credentials.
    backend: Backend,
}

/// The two modes, each with what it needs.
enum Backend {
    /// aerie holds the bucket's credentials.
    Direct {
        /// The bucket, shared with every sink and source.
        store: Arc<Store>,
        /// How backups are uploaded.
        settings: Arc<UploadSettings>,
    },
    /// The Panel holds them and presigns each part.
    Panel(Arc<PanelSettings>),
}

/// The writer of one backup, in either mode.
pub enum S3BackupSink {
    /// `mode: direct`.
    Direct(S3Sink),
    /// `mode: panel`.
    Panel(PanelSink),
}

impl Sink for S3BackupSink {
    fn write(&mut self, bytes: &[u8]) -> Result<(), AdapterError> {
        match self {
            Self::Direct(sink) => sink.write(bytes),
            Self::Panel(sink) => sink.write(bytes),
        }
    }

    fn finish(self, sha1: &str, size: u64) -> Result<StoredBackup, AdapterError> {
        match self {
            Self::Direct(sink) => sink.finish(sha1, size),
            Self::Panel(sink) => sink.finish(sha1, size),
        }
    }

    fn abort(self) -> Result<(), AdapterError> {
        match self {
            Self::Direct(sink) => sink.abort(),
            Self::Panel(sink) => sink.abort(),
        }
    }
}

impl Adapter for S3Adapter {
    const KIND: &'static str = "s3";
    type Sink = S3BackupSink;
    type Source = S3Source;

    fn new(config: serde_json::Value, host: &HostContext) -> Result<Self, AdapterError> {
        Self::new_with_services(config, host, Services::default())
    }

    fn new_with_services(
        config: serde_json::Value,
        host: &HostContext,
        services: Services,
    ) -> Result<Self, AdapterError> {
        let config = Config::parse(config)?;
        if config.mode == Mode::Panel {
            if !services.offered() {
                return Err(AdapterError::invalid_config(
                    "mode: `panel` needs an aerie that can ask the Panel for upload URLs \
                     (built with aerie-adapter-api 1.1 or later); upgrade aerie, or use \
                     `mode: direct` with a bucket and credentials",
                ));
            }
            if !services.panel_configured() {
                return Err(AdapterError::invalid_config(
                    "mode: `panel` needs the Panel, and aerie has none configured: set \
                     `remote` in aerie's config (or use `mode: direct` with a bucket and \
                     credentials)",
                ));
            }
            tracing::info!(
                part_size = config.part_size(),
                concurrency = config.concurrency,
                "S3 adapter ready; the Panel holds the bucket and presigns each part"
            );
            let settings = PanelSettings::new(services, config.part_size(), config.concurrency)?;
            return Ok(S3Adapter {
                backend: Backend::Panel(Arc::new(settings)),
            });
        }
        let store = runtime::block_on(async { Ok(Store::connect(&config).await) })?;
        tracing::info!(
            bucket = %config.bucket,
            region = %config.region,
            endpoint = config.endpoint.as_deref().unwrap_or("AWS"),
            prefix = %config.prefix,
            part_size = config.part_size(),
            concurrency = config.concurrency,
            static_keys = config.static_keys().is_some(),
            "S3 adapter ready"
        );
        Ok(S3Adapter {
            backend: Backend::Direct {
                store: Arc::new(store),
                settings: Arc::new(UploadSettings {
                    part_size: config.part_size(),
                    concurrency: config.concurrency,
                    storage_class: config.storage_class.as_deref().map(StorageClass::from),
                    aerie_version: host.aerie_version.clone(),
                }),
            },
        })
    }

    fn begin_backup(&self, server: &str, backup: &str) -> Result<S3BackupSink, AdapterError> {
        match &self.backend {
            Backend::Direct { store, settings } => {
                let key = store.key(server, backup)?;
                // S3 replaces an object without a word: a stored backup is refused here.
                match runtime::block_on(self.head(server, backup, &key)) {
                    Ok(_) => {
                        return Err(AdapterError::new(
                            ErrorKind::ALREADY_EXISTS,
                            format!("{} already exists", store.url(&key)),
                        ))
                    }
                    Err(err) if err.kind == ErrorKind::NOT_FOUND => {}
                    Err(err) => return Err(err),
                }
                Ok(S3BackupSink::Direct(S3Sink::new(
                    store.clone(),
                    settings.clone(),
                    server,
                    backup,
                    key,
                )))
            }
            Backend::Panel(settings) => {
                store::check_ids(server, backup)?;
                Ok(S3BackupSink::Panel(PanelSink::new(
                    settings.clone(),
                    server,
                    backup,
                )))
            }
        }
    }

    fn open(&self, server: &str, backup: &str, offset: u64) -> Result<S3Source, AdapterError> {
        let store = self.store(backup)?;
        let key = store.key(server, backup)?;
        download::open(store, server, backup, &key, offset)
    }

    fn stat(&self, server: &str, backup: &str) -> Result<BackupInfo, AdapterError> {
        let key = self.store(backup)?.key(server, backup)?;
        runtime::block_on(async {
            let (size, created_unix) = self.head(server, backup, &key).await?;
            let sha1 = sidecar::get(self.store(backup)?, &key)
                .await?
                .map(|sidecar| sidecar.checksum);
            Ok(BackupInfo {
                backup: backup.to_string(),
                server: Some(server.to_string()),
                key,
                size,
                created_unix,
                sha1,
            })
        })
    }

    fn list(&self, server: &str) -> Result<Vec<BackupInfo>, AdapterError> {
        let Backend::Direct { store, .. } = &self.backend else {
            return Ok(Vec::new());
        };
        let prefix = store.server_prefix(server)?;
        runtime::block_on(async {
            let mut pages = store
                .client
                .list_objects_v2()
                .bucket(&store.bucket)
                .prefix(&prefix)
                .into_paginator()
                .send();
            let mut backups = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| {
                    s3_error("ListObjectsV2", store.url(&prefix), &store.bucket, &e)
                })?;
                for object in page.contents() {
                    let Some(key) = object.key() else { continue };
                    let Some(backup) = key
                        .strip_prefix(prefix.as_str())
                        .and_then(|rest| rest.strip_suffix(".tar.gz"))
                        .filter(|b| !b.is_empty() && !b.contains('/'))
                    else {
                        continue;
                    };
                    backups.push(BackupInfo {
                        backup: backup.to_string(),
                        server: Some(server.to_string()),
                        key: key.to_string(),
                        size: object.size().unwrap_or(0).max(0) as u64,
                        created_unix: object.last_modified().map(|t| t.secs()).unwrap_or(0),
                        sha1: None,
                    });
                }
            }
            Ok(backups)
        })
    }

    fn delete(&self, server: &str, backup: &str) -> Result<(), AdapterError> {
        let store = self.store(backup)?;
        let key = store.key(server, backup)?;
        runtime::block_on(async {
            // S3 deletes a missing key without complaint: look first, to report NOT_FOUND.
            self.head(server, backup, &key).await?;
            for key in [key.clone(), sidecar_key(&key)] {
                store
                    .client
                    .delete_object()
                    .bucket(&store.bucket)
                    .key(&key)
                    .send()
                    .await
                    .map_err(|e| s3_error("DeleteObject", store.url(&key), &store.bucket, &e))?;
            }
            tracing::info!(key = %key, "backup deleted");
            Ok(())
        })
    }

    fn discard_incomplete(&self, server: &str, backup: &str) -> Result<(), AdapterError> {
        // With `mode: panel` the Panel aborts the upload when told the backup failed.
        let Backend::Direct { store, .. } = &self.backend else {
            return Ok(());
        };
        let key = store.key(server, backup)?;
        let aborted = runtime::block_on(cleanup::discard(store, &key))?;
        if aborted > 0 {
            tracing::info!(key = %key, uploads = aborted, "aborted unfinished multipart uploads");
        }
        Ok(())
    }
}

impl S3Adapter {
    /// The bucket, or `NOT_FOUND` with `mode: panel`: the Panel keeps those backups, restores
    /// them through a presigned `download_url` and deletes them itself.
    fn store(&self, backup: &str) -> Result<&Arc<Store>, AdapterError> {
        match &self.backend {
            Backend::Direct { store, .. } => Ok(store),
            Backend::Panel(_) => Err(AdapterError::not_found(format!(
                "backup {backup} is in the Panel's bucket (`mode: panel`): the Panel restores \
                 it through a download_url and deletes it itself; aerie holds no credentials \
                 to reach it"
            ))),
        }
    }

    /// HeadObject on a backup's archive: its size and modification time (Unix seconds), or
    /// `NOT_FOUND`.
    async fn head(
        &self,
        server: &str,
        backup: &str,
        key: &str,
    ) -> Result<(u64, i64), AdapterError> {
        let store = self.store(backup)?;
        match store
            .client
            .head_object()
            .bucket(&store.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok((
                head.content_length().unwrap_or(0).max(0) as u64,
                head.last_modified().map(|t| t.secs()).unwrap_or(0),
            )),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                Err(AdapterError::not_found(format!(
                    "no backup {backup} of server {server}: {} does not exist",
                    store.url(key)
                )))
            }
            Err(e) => Err(s3_error("HeadObject", store.url(key), &store.bucket, &e)),
        }
    }
}

aerie_adapter_api::export_adapter!(S3Adapter);
