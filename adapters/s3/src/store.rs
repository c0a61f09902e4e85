//! The bucket: connecting to it, and where things live in it. A backup is the object
//! `<prefix><server>/<backup>.tar.gz` (the Panel's own layout) with a sidecar
//! `<key>.json` beside it.

use std::time::Duration;

use aerie_adapter_api::AdapterError;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, StalledStreamProtectionConfig};
use aws_sdk_s3::Client;

use crate::config::Config;

/// How long connecting to the server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one attempt of a request without a large body may take, a guard against a
/// server that accepts a connection and never answers.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a transfer may make no progress before it fails (stalled-stream protection).
pub const STALL_GRACE: Duration = Duration::from_secs(20);

/// A bucket and the S3 client that reaches it.
pub struct Store {
    /// The client, configured for the bucket's endpoint, region and credentials.
    pub client: Client,
    /// The bucket's name.
    pub bucket: String,
    /// Put in front of every key.
    prefix: String,
}

impl Store {
    /// Builds the client. With static keys in the config, the AWS credential chain (and so
    /// the instance metadata service) is never consulted; otherwise the chain runs lazily,
    /// at the first request: environment, profile files, web identity, container and
    /// instance metadata (which `AWS_EC2_METADATA_DISABLED=true` turns off).
    pub async fn connect(config: &Config) -> Store {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()));
        if let Some((id, secret)) = config.static_keys() {
            loader = loader.credentials_provider(Credentials::new(
                id,
                secret,
                None,
                None,
                "aerie-plugins-file",
            ));
        }
        let shared = loader.load().await;
        let mut s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.force_path_style)
            .timeout_config(timeouts(ATTEMPT_TIMEOUT))
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(STALL_GRACE)
                    .build(),
            );
        if let Some(endpoint) = &config.endpoint {
            s3 = s3.endpoint_url(endpoint);
        }
        Store {
            client: Client::from_conf(s3.build()),
            bucket: config.bucket.clone(),
            prefix: config.prefix.clone(),
        }
    }

    /// The key of backup `backup` of server `server`.
    pub fn key(&self, server: &str, backup: &str) -> Result<String, AdapterError> {
        check_id("backup", backup)?;
        Ok(format!("{}{backup}.tar.gz", self.server_prefix(server)?))
    }

    /// The prefix under which the backups of `server` live.
    pub fn server_prefix(&self, server: &str) -> Result<String, AdapterError> {
        check_id("server", server)?;
        Ok(format!("{}{server}/", self.prefix))
    }

    /// `s3://bucket/key`, for messages.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

/// The key of the sidecar that describes the archive at `key`.
pub fn sidecar_key(key: &str) -> String {
    format!("{key}.json")
}

/// Timeouts: the usual connect timeout, and `attempt` for each attempt of a request.
pub fn timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .build()
}

/// Refuses a server or backup id that would not stay one path segment of a key.
pub fn check_ids(server: &str, backup: &str) -> Result<(), AdapterError> {
    check_id("server", server)?;
    check_id("backup", backup)
}

/// Refuses an id that would not stay one path segment of a key.
fn check_id(what: &str, id: &str) -> Result<(), AdapterError> {
    let bad = id.is_empty()
        || id == "."
        || id == ".."
        || id.contains(['/', '\\'])
        || id.chars().any(char::is_control);
    if bad {
        Err(AdapterError::other(format!(
            "invalid {what} id `{}`: it must be one non-empty path segment",
            id.escape_debug()
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check_id;

    #[test]
    fn ids_stay_one_segment() {
        for good in ["d2d1a4bd-5a4c-4a8f-9c49-2f0f1d6a0c11", "server-1", "a.b"] {
            assert!(check_id("backup", good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a\\b", "a\nb"] {
            assert!(check_id("backup", bad).is_err(), "{bad:?}");
        }
    }
}
