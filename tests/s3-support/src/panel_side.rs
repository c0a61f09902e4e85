//! The Panel's own S3 calls when its backup driver is `s3` (`APP_BACKUP_DRIVER=s3`), as its
//! `BackupRemoteUploadController` and `BackupStatusController` make them
//! (wings-protocol.md §1.5, §1.6): CreateMultipartUpload, one presigned UploadPart URL per
//! part, then CompleteMultipartUpload with the parts the daemon reports, or
//! AbortMultipartUpload. The end-to-end Panel stand-in uses it for aerie's `mode: panel`.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use tokio::runtime::Runtime;

use crate::{client_config, client_runtime};

/// The Panel's S3 side, on one bucket, with the Panel's settings.
pub struct PanelS3 {
    client: Client,
    /// The bucket (`AWS_BACKUPS_BUCKET`).
    pub bucket: String,
    /// `BACKUP_MAX_PART_SIZE`: the `part_size` the Panel answers and counts URLs with.
    pub part_size: u64,
    /// `BACKUP_PRESIGNED_URL_LIFESPAN`.
    pub lifetime: Duration,
    /// URLs are signed as if this long ago (zero: now); a test's way to hand out URLs that
    /// have already expired without waiting for them to.
    pub signed_ago: Duration,
    runtime: Runtime,
}

impl PanelS3 {
    /// The Panel's client for `bucket` through `endpoint` (the test server, or a proxy in
    /// front of it: the URLs it presigns point there), with the Panel's defaults: 5 GiB
    /// parts, URLs valid for 60 minutes.
    pub fn new(bucket: &str, endpoint: &str) -> PanelS3 {
        let config = client_config(endpoint, "aerie-tests-panel")
            // As the Panel's PHP SDK presigns: no checksum of an empty body in the URL.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        PanelS3 {
            client: Client::from_conf(config),
            bucket: bucket.to_string(),
            part_size: 5 * 1024 * 1024 * 1024,
            lifetime: Duration::from_secs(60 * 60),
            signed_ago: Duration::ZERO,
            runtime: client_runtime(),
        }
    }

    /// CreateMultipartUpload of `key` (`ContentType: application/x-gzip`); the upload id.
    pub fn create_upload(&self, key: &str) -> Result<String, String> {
        let output = self
            .runtime
            .block_on(
                self.client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .content_type("application/x-gzip")
                    .send(),
            )
            .map_err(|e| format!("CreateMultipartUpload: {e:?}"))?;
        output
            .upload_id
            .ok_or_else(|| "CreateMultipartUpload: no upload id".to_string())
    }

    /// `ceil(size / part_size)` presigned UploadPart URLs, numbered from 1.
    pub fn presign_parts(
        &self,
        key: &str,
        upload_id: &str,
        size: u64,
    ) -> Result<Vec<String>, String> {
        let count = size.div_ceil(self.part_size);
        let presigning = PresigningConfig::builder()
            .start_time(SystemTime::now() - self.signed_ago)
            .expires_in(self.lifetime)
            .build()
            .map_err(|e| format!("presigning config: {e}"))?;
        (1..=count)
            .map(|number| {
                let request = self
                    .runtime
                    .block_on(
                        self.client
                            .upload_part()
                            .bucket(&self.bucket)
                            .key(key)
                            .upload_id(upload_id)
                            .part_number(number as i32)
                            .presigned(presigning.clone()),
                    )
                    .map_err(|e| format!("presigning UploadPart {number}: {e:?}"))?;
                Ok(request.uri().to_string())
            })
            .collect()
    }

    /// A presigned GetObject URL of `key`, valid for 5 minutes: the Panel's `download_url`
    /// for a restore (`DownloadLinkService`).
    pub fn presign_get(&self, key: &str) -> Result<String, String> {
        let presigning = PresigningConfig::expires_in(Duration::from_secs(5 * 60))
            .map_err(|e| format!("presigning config: {e}"))?;
        let request = self
            .runtime
            .block_on(
                self.client
                    .get_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .presigned(presigning),
            )
            .map_err(|e| format!("presigning GetObject: {e:?}"))?;
        Ok(request.uri().to_string())
    }

    /// CompleteMultipartUpload with the reported `(etag, part_number)` parts, in order.
    pub fn complete(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(String, i32)],
    ) -> Result<(), String> {
        let parts = parts
            .iter()
            .map(|(etag, number)| {
                CompletedPart::builder()
                    .e_tag(etag)
                    .part_number(*number)
                    .build()
            })
            .collect();
        self.runtime
            .block_on(
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send(),
            )
            .map(drop)
            .map_err(|e| format!("CompleteMultipartUpload: {e:?}"))
    }

    /// AbortMultipartUpload.
    pub fn abort(&self, key: &str, upload_id: &str) -> Result<(), String> {
        self.runtime
            .block_on(
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .send(),
            )
            .map(drop)
            .map_err(|e| format!("AbortMultipartUpload: {e:?}"))
    }
}
