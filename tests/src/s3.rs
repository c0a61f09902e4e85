//! S3 for the end-to-end tests: the plugins file that points the `s3` adapter at a bucket of
//! the test server. The test server, the bucket with a direct client to look into it, and
//! the fault-injecting proxy to put between the daemon and the server come from
//! `aerie-s3-test-support`, shared with the adapter's own tests.

use std::path::PathBuf;

use aerie_s3_test_support::{access_key_id, region, secret_access_key, Bucket};

/// S3's smallest part, the adapter's default `part_size`.
pub const PART_SIZE: u64 = 5 * 1024 * 1024;

/// The built `s3` adapter.
pub fn s3_library() -> PathBuf {
    crate::artifact("libaerie_adapter_s3.so")
}

/// The daemon's `s3` adapter on a bucket.
pub trait Plugins {
    /// A plugins file with one adapter, `s3`, on this bucket through `endpoint` (the test
    /// server, or a proxy in front of it), with `part_size` 5 MiB and `extra` YAML lines
    /// (`key: value`) added to its config.
    fn plugins(&self, endpoint: &str, extra: &[&str]) -> String;
}

impl Plugins for Bucket {
    fn plugins(&self, endpoint: &str, extra: &[&str]) -> String {
        let mut yaml = format!(
            "adapters:\n  - name: s3\n    library: {library}\n    config:\n      \
             bucket: {bucket}\n      endpoint: {endpoint}\n      force_path_style: true\n      \
             region: {region}\n      access_key_id: {id}\n      secret_access_key: {secret}\n",
            library = s3_library().display(),
            bucket = self.name,
            region = region(),
            id = access_key_id(),
            secret = secret_access_key(),
        );
        if !extra.iter().any(|line| line.starts_with("part_size:")) {
            yaml.push_str(&format!("      part_size: {PART_SIZE}\n"));
        }
        for line in extra {
            yaml.push_str(&format!("      {line}\n"));
        }
        yaml
    }
}

/// A plugins file with one adapter, `s3`, in `mode: panel` (the Panel holds the bucket and
/// presigns each part), with `part_size` 5 MiB and `extra` YAML lines added to its config.
pub fn panel_mode_plugins(extra: &[&str]) -> String {
    let mut yaml = format!(
        "adapters:\n  - name: s3\n    library: {library}\n    config:\n      mode: panel\n      \
         part_size: {PART_SIZE}\n",
        library = s3_library().display(),
    );
    for line in extra {
        yaml.push_str(&format!("      {line}\n"));
    }
    yaml
}
