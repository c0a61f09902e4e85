//! The adapter's configuration: the `config` mapping of its entry in the plugins file,
//! parsed and checked once at start-up so that a bad value stops the daemon with a message
//! naming the key.

use aerie_adapter_api::{parse_config, AdapterError};
use serde::Deserialize;

/// S3's smallest allowed part (all but the last part of a multipart upload).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// S3's largest allowed part.
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// The default part size with `mode: panel`: S3's minimum would cap an archive at about
/// 49 GiB in 10,000 parts before the size bound forces larger ones, and 16 MiB × the
/// default concurrency of 4 keeps memory near 80 MiB.
pub const DEFAULT_PANEL_PART_SIZE: u64 = 16 * 1024 * 1024;

/// Who holds the bucket's credentials.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// aerie: the adapter has the bucket and credentials and completes uploads itself.
    #[default]
    Direct,
    /// The Panel (`APP_BACKUP_DRIVER=s3`): it starts the upload, presigns a URL per part
    /// and completes it from the parts aerie reports; no S3 credentials on the node.
    Panel,
}

/// The settings of one S3 adapter instance.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who holds the bucket's credentials: `direct` (aerie, the default) or `panel`.
    #[serde(default)]
    pub mode: Mode,
    /// The bucket backups are stored in (`mode: direct` only).
    #[serde(default)]
    pub bucket: String,
    /// The bucket's region.
    #[serde(default = "default_region")]
    pub region: String,
    /// The URL of an S3-compatible server (MinIO, Ceph, a local test server); AWS when unset.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Address the bucket as `endpoint/bucket/key` instead of `bucket.endpoint/key`.
    #[serde(default)]
    pub force_path_style: bool,
    /// A static access key; with `secret_access_key`, replaces the AWS credential chain.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The secret of `access_key_id`.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Put in front of every key, verbatim (end it with `/` to make it a folder).
    #[serde(default)]
    pub prefix: String,
    /// Bytes per uploaded part at the start of an upload (it grows for very large archives);
    /// 5 MiB by default, 16 MiB with `mode: panel`. Read it through [`Config::part_size`].
    #[serde(default, rename = "part_size")]
    pub part_size_setting: Option<u64>,
    /// Parts uploaded at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// The storage class of archives (e.g. `STANDARD_IA`); the bucket's default when unset.
    #[serde(default)]
    pub storage_class: Option<String>,
}

fn default_region() -> String {
    "us-east-1".to_string()
}

fn default_concurrency() -> usize {
    4
}

impl Config {
    /// Parses and checks the `config` mapping; every error names the offending key.
    pub fn parse(config: serde_json::Value) -> Result<Self, AdapterError> {
        let config: Config = parse_config(config)?;
        config.validate()?;
        Ok(config)
    }

    /// Bytes per part at the start of an upload: the configured size, or the mode's default.
    pub fn part_size(&self) -> u64 {
        self.part_size_setting.unwrap_or(match self.mode {
            Mode::Direct => MIN_PART_SIZE,
            Mode::Panel => DEFAULT_PANEL_PART_SIZE,
        })
    }

    /// The checks serde cannot make.
    fn validate(&self) -> Result<(), AdapterError> {
        let bad =
            |key: &str, why: String| Err(AdapterError::invalid_config(format!("{key}: {why}")));
        if self.mode == Mode::Panel {
            // Keys that would be silently ignored: the Panel's own S3 settings apply.
            let unused = [
                ("bucket", !self.bucket.is_empty()),
                ("endpoint", self.endpoint.is_some()),
                ("access_key_id", self.access_key_id.is_some()),
                ("secret_access_key", self.secret_access_key.is_some()),
                ("prefix", !self.prefix.is_empty()),
                ("storage_class", self.storage_class.is_some()),
            ];
            if let Some((key, _)) = unused.iter().find(|(_, set)| *set) {
                return bad(
                    key,
                    "not used with `mode: panel`: the Panel's own S3 settings \
                     (AWS_BACKUPS_BUCKET and the rest) decide where backups go; remove it"
                        .into(),
                );
            }
        } else if self.bucket.trim().is_empty() {
            return bad(
                "bucket",
                "missing or empty: `mode: direct` (the default) needs the bucket and its \
                 credentials; with `mode: panel` the Panel holds them"
                    .into(),
            );
        }
        if self.region.trim().is_empty() {
            return bad("region", "must not be empty".into());
        }
        if let Some(endpoint) = &self.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return bad(
                    "endpoint",
                    format!("`{endpoint}` is not an http:// or https:// URL"),
                );
            }
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) => {
                return bad(
                    "secret_access_key",
                    "missing: access_key_id is set, so secret_access_key must be too".into(),
                )
            }
            (None, Some(_)) => {
                return bad(
                    "access_key_id",
                    "missing: secret_access_key is set, so access_key_id must be too".into(),
                )
            }
            _ => {}
        }
        if self.prefix.starts_with('/') {
            return bad(
                "prefix",
                format!("`{}` must not start with `/`", self.prefix),
            );
        }
        if self.part_size() < MIN_PART_SIZE {
            return bad(
                "part_size",
                format!(
                    "{} bytes is below S3's minimum part size of 5 MiB ({MIN_PART_SIZE} bytes)",
                    self.part_size()
                ),
            );
        }
        if self.part_size() > MAX_PART_SIZE {
            return bad(
                "part_size",
                format!(
                    "{} bytes is above S3's maximum part size of 5 GiB ({MAX_PART_SIZE} bytes)",
                    self.part_size()
                ),
            );
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1".into());
        }
        if let Some(class) = &self.storage_class {
            if class.trim().is_empty() {
                return bad("storage_class", "must not be empty when set".into());
            }
        }
        Ok(())
    }

    /// The static credentials, when both halves are configured.
    pub fn static_keys(&self) -> Option<(&str, &str)> {
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => Some((id, secret)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aerie_adapter_api::ErrorKind;
    use serde_json::json;

    #[test]
    fn defaults() {
        let config = Config::parse(json!({ "bucket": "b" })).unwrap();
        assert_eq!(
            config,
            Config {
                mode: Mode::Direct,
                bucket: "b".into(),
                region: "us-east-1".into(),
                endpoint: None,
                force_path_style: false,
                access_key_id: None,
                secret_access_key: None,
                prefix: String::new(),
                part_size_setting: None,
                concurrency: 4,
                storage_class: None,
            }
        );
        assert_eq!(config.part_size(), 5_242_880);
        assert_eq!(config.static_keys(), None);
    }

    #[test]
    fn panel_mode_needs_no_bucket_and_refuses_credentials() {
        let config = Config::parse(json!({ "mode": "panel" })).unwrap();
        assert_eq!(config.mode, Mode::Panel);
        assert_eq!(config.part_size(), DEFAULT_PANEL_PART_SIZE);
        for key in ["bucket", "access_key_id", "endpoint"] {
            let err = Config::parse(json!({ "mode": "panel", key: "x" })).unwrap_err();
            assert!(
                err.message
                    .as_str()
                    .starts_with(&format!("{key}: not used with `mode: panel`")),
                "{}",
                err.message
            );
        }
        let err = Config::parse(json!({ "mode": "sideways" })).unwrap_err();
        assert!(
            err.message.as_str().starts_with("mode: unknown variant"),
            "{}",
            err.message
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (json!({}), "bucket: missing or empty"),
            (
                json!({ "bucket": "b", "part_size": 1_048_576 }),
                "part_size:",
            ),
            (json!({ "bucket": "b", "part_size": "big" }), "part_size:"),
            (json!({ "bucket": "b", "concurrency": 0 }), "concurrency:"),
            (
                json!({ "bucket": "b", "access_key_id": "k" }),
                "secret_access_key:",
            ),
            (
                json!({ "bucket": "b", "secret_access_key": "s" }),
                "access_key_id:",
            ),
            (
                json!({ "bucket": "b", "endpoint": "localhost:9000" }),
                "endpoint:",
            ),
            (
                json!({ "bucket": "b", "colour": "red" }),
                "unknown field `colour`",
            ),
            (json!({ "bucket": "" }), "bucket:"),
        ];
        for (config, expected) in cases {
            let err = Config::parse(config.clone()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::INVALID_CONFIG, "{config}");
            assert!(
                err.message.as_str().starts_with(expected)
                    || err.message.as_str().contains(expected),
                "{config}: {}",
                err.message
            );
        }
        let err = Config::parse(json!({ "bucket": "b", "part_size": 1_048_576 })).unwrap_err();
        assert!(
            err.message.as_str().starts_with("part_size:"),
            "{}",
            err.message
        );
    }

    #[test]
    fn static_keys_come_in_pairs() {
        let config = Config::parse(json!({
            "bucket": "b", "access_key_id": "id", "secret_access_key": "secret"
        }))
        .unwrap();
        assert_eq!(config.static_keys(), Some(("id", "secret")));
    }
}
