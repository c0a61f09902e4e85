//! The daemon's configuration: Wings' own `config.yml` keys (so an existing Wings config
//! works as it is) plus the few aerie adds, or an embedded default for a first run.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::allowlist::AllowEntry;

/// Bytes in a MiB, the unit of Wings' rate limits.
const MIB: u64 = 1024 * 1024;

/// Where the embedded default keeps everything, relative to the working directory.
pub const DEFAULT_DATA_FOLDER: &str = "aerie-data";

/// The whole configuration, as read from `config.yml` or built by [`Config::embedded`].
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// Where the HTTP API listens.
    #[serde(default)]
    pub api: Api,
    /// The node's token id; with `token`, how aerie authenticates to the Panel.
    #[serde(default)]
    pub token_id: String,
    /// The node token: the bearer token the Panel sends, and the key of download JWTs.
    pub token: String,
    /// The Panel's base URL, for status callbacks; unset means no callbacks.
    #[serde(default)]
    pub remote: Option<String>,
    /// How aerie talks to the Panel.
    #[serde(default)]
    pub remote_query: RemoteQuery,
    /// Browser origins allowed to open a websocket, besides `remote` (`*` allows any).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Directories and backup settings.
    #[serde(default)]
    pub system: System,
    /// The plugins file: which adapter libraries to load, under which names. Unset means the
    /// bundled `wings` adapter from the folder of the `aerie` binary.
    #[serde(default)]
    pub plugins: Option<PathBuf>,
    /// Wings behind aerie on this node: every request aerie does not serve itself is passed
    /// to it. Unset means standalone: aerie serves only the backup API.
    #[serde(default)]
    pub upstream: Option<Upstream>,
    /// `metrics.*`: a listener of its own for Prometheus (aerie's key).
    #[serde(default)]
    pub metrics: Metrics,
    /// Wings' keys that aerie reads without using; accepted so Wings configs load.
    #[serde(skip)]
    pub ignored_keys: Vec<String>,
}

/// `upstream.*`: where Wings listens when aerie stands in front of it.
#[derive(Debug, Clone, Deserialize)]
pub struct Upstream {
    /// Wings' base URL on this node, e.g. `http://127.0.0.1:8081`.
    pub url: String,
}

/// `metrics.*`. `GET /metrics` is always served on the API port, behind the node token;
/// `bind` serves it on a second address too, without a token, for a Prometheus server that
/// should not hold the node token.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metrics {
    /// Where the token-less `/metrics` listener binds (e.g. `127.0.0.1:9101`); unset: none.
    #[serde(default)]
    pub bind: Option<std::net::SocketAddr>,
}

/// `remote_query.*`.
#[derive(Debug, Clone, Deserialize)]
pub struct RemoteQuery {
    /// Seconds before a request to the Panel times out (Wings' default: 30).
    #[serde(default = "default_remote_timeout")]
    pub timeout: u64,
}

impl Default for RemoteQuery {
    fn default() -> Self {
        Self {
            timeout: default_remote_timeout(),
        }
    }
}

fn default_remote_timeout() -> u64 {
    30
}

/// `api.*`.
#[derive(Debug, Clone, Deserialize)]
pub struct Api {
    /// The address to bind (`0.0.0.0` in Wings).
    #[serde(default = "default_api_host")]
    pub host: String,
    /// The port to bind; 0 picks a free one (printed at start).
    #[serde(default = "default_api_port")]
    pub port: u16,
    /// Seconds a client has to send a request's headers, then its body; also how long an
    /// idle keep-alive connection is kept.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: u64,
    /// Connections served at once (websockets included); more wait in the kernel's backlog.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a websocket may stay open without a valid token before it is closed.
    #[serde(default = "default_websocket_auth_timeout")]
    pub websocket_auth_timeout: u64,
    /// `api.ssl.*`: HTTPS on the API port.
    #[serde(default)]
    pub ssl: Ssl,
}

/// `api.ssl.*`, as Wings reads it: PEM files laid out as Let's Encrypt lays them out.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Ssl {
    /// Serve HTTPS instead of HTTP.
    #[serde(default)]
    pub enabled: bool,
    /// The certificate chain (`fullchain.pem`: the node's certificate first).
    #[serde(default)]
    pub cert: PathBuf,
    /// The certificate's private key (`privkey.pem`).
    #[serde(default)]
    pub key: PathBuf,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            host: default_api_host(),
            port: default_api_port(),
            read_timeout: default_read_timeout(),
            max_connections: default_max_connections(),
            websocket_auth_timeout: default_websocket_auth_timeout(),
            ssl: Ssl::default(),
        }
    }
}

/// hyper's default header-read timeout, and the 30 s the Panel's own calls allow.
fn default_read_timeout() -> u64 {
    30
}

/// A quarter of the `LimitNOFILE=4096` in the Wings service unit of Pterodactyl's install
/// guide: the rest stays free for archives, adapters and the registry.
fn default_max_connections() -> usize {
    1024
}

/// Generous for a browser, which sends `auth` as soon as the socket opens.
fn default_websocket_auth_timeout() -> u64 {
    30
}

fn default_api_host() -> String {
    "0.0.0.0".into()
}

/// Wings' default port.
fn default_api_port() -> u16 {
    8080
}

/// `system.*`.
#[derive(Debug, Clone, Deserialize)]
pub struct System {
    /// aerie's own state (the backup registry); Wings' `root_directory`.
    #[serde(default = "default_root_directory")]
    pub root_directory: PathBuf,
    /// The folder that holds each server's files, at `<data>/<server id>`.
    #[serde(default = "default_data")]
    pub data: PathBuf,
    /// Where the `wings` adapter keeps archives unless its own config says otherwise.
    #[serde(default = "default_backup_directory")]
    pub backup_directory: PathBuf,
    /// Older Wings spelling of `backups.write_limit`.
    #[serde(default)]
    pub backup_write_limit: Option<u64>,
    /// `system.backups.*`.
    #[serde(default)]
    pub backups: Backups,
    /// `system.user.*`: who owns restored files.
    #[serde(default)]
    pub user: User,
    /// Seconds running backups and restores get to finish on their own after SIGTERM or
    /// SIGINT, before they are cancelled (ended failed and reported); 0 cancels at once.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: u64,
}

/// `system.user.*`, as in Wings: restored files are owned by this uid/gid when set.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct User {
    /// Owner of restored files.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Group of restored files.
    #[serde(default)]
    pub gid: Option<u32>,
}

impl Default for System {
    fn default() -> Self {
        Self {
            root_directory: default_root_directory(),
            data: default_data(),
            backup_directory: default_backup_directory(),
            backup_write_limit: None,
            backups: Backups::default(),
            user: User::default(),
            shutdown_timeout: default_shutdown_timeout(),
        }
    }
}

/// A minute: a backup near its end gets to finish. With the connections' grace (30 s) and
/// the last Panel delivery (5 s) after it, the stop fits the README unit's
/// `TimeoutStopSec=120` before systemd's SIGKILL.
fn default_shutdown_timeout() -> u64 {
    60
}

fn default_root_directory() -> PathBuf {
    "/var/lib/pterodactyl".into()
}

fn default_data() -> PathBuf {
    "/var/lib/pterodactyl/volumes".into()
}

fn default_backup_directory() -> PathBuf {
    "/var/lib/pterodactyl/backups".into()
}

/// `system.backups.*`.
#[derive(Debug, Clone, Deserialize)]
pub struct Backups {
    /// Compressed bytes per second, in MiB; 0 or unset means unlimited.
    #[serde(default)]
    pub write_limit: Option<u64>,
    /// How hard to compress.
    #[serde(default)]
    pub compression_level: CompressionLevel,
    /// Threads that compress a backup; unset means one per core.
    #[serde(default)]
    pub compression_threads: Option<usize>,
    /// Hosts, IPs and CIDRs a restore's `download_url` may reach although they are
    /// loopback or private (later Wings' key).
    #[serde(default)]
    pub restore_host_allowlist: Vec<AllowEntry>,
    /// Most bytes of file content one restore may write; 0 or unset means no limit.
    #[serde(default)]
    pub restore_max_bytes: Option<u64>,
    /// Seconds a restore waits for Wings to stop the server before it fails, when aerie
    /// stands in front of Wings (Wings' own `WaitForStop` allows 120).
    #[serde(default = "default_restore_stop_timeout")]
    pub restore_stop_timeout: u64,
    /// Seconds between periodic verifications (each re-reads the least recently verified
    /// backup); 0 or unset means off.
    #[serde(default)]
    pub verify_interval: Option<u64>,
    /// Archive bytes per second a periodic verification reads, in MiB; 0 means unlimited.
    #[serde(default = "default_verify_read_limit")]
    pub verify_read_limit: u64,
}

impl Default for Backups {
    fn default() -> Self {
        Self {
            write_limit: None,
            compression_level: CompressionLevel::default(),
            compression_threads: None,
            restore_host_allowlist: Vec::new(),
            restore_max_bytes: None,
            restore_stop_timeout: default_restore_stop_timeout(),
            verify_interval: None,
            verify_read_limit: default_verify_read_limit(),
        }
    }
}

/// A tenth of a spinning disk's sequential read (about 160 MiB/s): a verification in the
/// background never crowds out the game servers' own reads; 10 GiB take about 10 minutes.
fn default_verify_read_limit() -> u64 {
    16
}

fn default_restore_stop_timeout() -> u64 {
    120
}

/// Wings' three compression settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompressionLevel {
    /// Stored, not compressed (deflate's stored blocks).
    None,
    /// Fast: ISA-L level 2 (about the size `pigz -1` makes); Wings' default.
    #[default]
    BestSpeed,
    /// Small: libdeflate level 8 (smaller than `pigz -9`).
    BestCompression,
}

impl Config {
    /// Reads and checks `path`. Unknown keys are collected in `ignored_keys`; a bad value
    /// for a known key is an error naming the key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut config =
            Self::parse(&text).with_context(|| format!("invalid config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(plugins) = &config.plugins {
            config.plugins = Some(base.join(plugins));
        }
        Ok(config)
    }

    /// Parses YAML text into a checked config.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut ignored = BTreeSet::new();
        let deserializer = serde_yaml::Deserializer::from_str(text);
        let mut record_ignored = |path: serde_ignored::Path<'_>| {
            ignored.insert(path.to_string());
        };
        let deserializer = serde_ignored::Deserializer::new(deserializer, &mut record_ignored);
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            // serde_yaml names the key itself (without a list index) in front of an error
            // a value's own parser gave: said once is enough.
            let unindexed: String = path.split('[').next().unwrap_or_default().into();
            let message = message
                .strip_prefix(&format!("{unindexed}: "))
                .unwrap_or(&message);
            anyhow::anyhow!("{path}: {message}")
        })?;
        config.ignored_keys = ignored.into_iter().collect();
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.token.trim().is_empty() {
            bail!("token: must not be empty (it is the bearer token the Panel sends)");
        }
        if self.system.backups.compression_threads == Some(0) {
            bail!(
                "system.backups.compression_threads: must be at least 1 (or unset: one per core)"
            );
        }
        if self.system.user.uid.is_some() != self.system.user.gid.is_some() {
            bail!("system.user: set both uid and gid, or neither");
        }
        if self.api.read_timeout == 0 {
            bail!("api.read_timeout: must be at least 1 second");
        }
        if !(1..=tokio::sync::Semaphore::MAX_PERMITS).contains(&self.api.max_connections) {
            bail!(
                "api.max_connections: must be between 1 and {}",
                tokio::sync::Semaphore::MAX_PERMITS
            );
        }
        if self.api.websocket_auth_timeout == 0 {
            bail!("api.websocket_auth_timeout: must be at least 1 second");
        }
        if self.remote_query.timeout == 0 {
            bail!("remote_query.timeout: must be at least 1 second");
        }
        if let Some(remote) = &self.remote {
            if !(remote.starts_with("http://") || remote.starts_with("https://")) {
                bail!("remote: {remote:?} is not an http:// or https:// URL");
            }
        }
        if let Some(upstream) = &self.upstream {
            let url = &upstream.url;
            // Wings listens in plain HTTP on loopback behind aerie (README, "Deploy beside Wings").
            if !url.starts_with("http://") {
                bail!("upstream.url: {url:?} is not an http:// URL (Wings behind aerie listens in plain HTTP on loopback)");
            }
        }
        if self.api.ssl.enabled {
            if self.api.ssl.cert.as_os_str().is_empty() {
                bail!("api.ssl.cert: must name the certificate chain (PEM) when ssl is enabled");
            }
            if self.api.ssl.key.as_os_str().is_empty() {
                bail!("api.ssl.key: must name the private key (PEM) when ssl is enabled");
            }
        }
        if self.system.backups.restore_stop_timeout == 0 {
            bail!("system.backups.restore_stop_timeout: must be at least 1 second");
        }
        for (key, mib) in [
            (
                "system.backups.write_limit",
                self.system.backups.write_limit,
            ),
            ("system.backup_write_limit", self.system.backup_write_limit),
            (
                "system.backups.verify_read_limit",
                Some(self.system.backups.verify_read_limit),
            ),
        ] {
            if mib.is_some_and(|mib| mib.checked_mul(MIB).is_none()) {
                bail!(
                    "{key}: {} MiB/s is more than can be counted in bytes",
                    mib.unwrap_or(0)
                );
            }
        }
        Ok(())
    }

    /// The configuration of a first run without a config file: everything under
    /// `./aerie-data/`, listening on 127.0.0.1:8080, with a token generated once and kept in
    /// `./aerie-data/token`.
    pub fn embedded() -> anyhow::Result<Self> {
        let base = PathBuf::from(DEFAULT_DATA_FOLDER);
        fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
        let token = load_or_create_token(&base.join("token"))?;
        Ok(Self {
            api: Api {
                host: "127.0.0.1".into(),
                ..Api::default()
            },
            token_id: "aerie".into(),
            token,
            remote: None,
            remote_query: RemoteQuery::default(),
            allowed_origins: Vec::new(),
            system: System {
                root_directory: base.clone(),
                data: base.join("volumes"),
                backup_directory: base.join("backups"),
                ..System::default()
            },
            plugins: None,
            upstream: None,
            metrics: Metrics::default(),
            ignored_keys: Vec::new(),
        })
    }

    /// How many threads compress a backup: the configured number, or one per core.
    pub fn compression_threads(&self) -> usize {
        self.system
            .backups
            .compression_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// The owner (uid, gid) of restored files, if configured.
    pub fn restore_owner(&self) -> Option<(u32, u32)> {
        self.system.user.uid.zip(self.system.user.gid)
    }

    /// The most bytes of file content a restore may write, if limited.
    pub fn restore_max_bytes(&self) -> Option<u64> {
        self.system
            .backups
            .restore_max_bytes
            .filter(|&bytes| bytes > 0)
    }

    /// How often a backup is verified in the background, if at all.
    pub fn verify_interval(&self) -> Option<std::time::Duration> {
        self.system
            .backups
            .verify_interval
            .filter(|&seconds| seconds > 0)
            .map(std::time::Duration::from_secs)
    }

    /// The periodic verification's read limit in bytes per second, if any.
    pub fn verify_read_limit_bytes(&self) -> Option<u64> {
        Some(self.system.backups.verify_read_limit)
            .filter(|&mib| mib > 0)
            .map(|mib| mib.saturating_mul(MIB))
    }

    /// The write limit in bytes per second, if any (`backups.write_limit` wins over the older
    /// `backup_write_limit`).
    pub fn write_limit_bytes(&self) -> Option<u64> {
        self.system
            .backups
            .write_limit
            .or(self.system.backup_write_limit)
            .filter(|&mib| mib > 0)
            .map(|mib| mib.saturating_mul(MIB))
    }
}

/// Reads the token kept in `path`, or makes a random one and keeps it there (mode 0600).
fn load_or_create_token(path: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(token) = fs::read_to_string(path) {
        let token = token.trim().to_string();
        if !token.is_empty() {
            return Ok(token);
        }
    }
    let token: String = {
        use rand::distr::{Alphanumeric, SampleString};
        Alphanumeric.sample_string(&mut rand::rng(), 48)
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{token}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wings_config_loads_and_its_unused_keys_are_reported() {
        let config = Config::parse(
            "debug: false\nuuid: abc\ntoken_id: id1\ntoken: secret\n\
             api:\n  host: 127.0.0.1\n  port: 9090\n  ssl:\n    enabled: false\n  disable_remote_download: true\n\
             system:\n  data: /srv/volumes\n  sftp:\n    bind_port: 2022\n\
             \x20 backups:\n    write_limit: 5\n    compression_level: best_compression\n",
        )
        .unwrap();
        assert_eq!(config.api.port, 9090);
        assert_eq!(config.system.data, PathBuf::from("/srv/volumes"));
        assert_eq!(
            config.system.backups.compression_level,
            CompressionLevel::BestCompression
        );
        assert_eq!(config.write_limit_bytes(), Some(5 * 1024 * 1024));
        assert_eq!(
            config.ignored_keys,
            vec![
                "api.disable_remote_download",
                "debug",
                "system.sftp",
                "uuid"
            ]
        );
    }

    #[test]
    fn the_example_config_is_valid_and_uses_every_key() {
        let config = Config::parse(include_str!("../../config.example.yml")).unwrap();
        assert!(config.ignored_keys.is_empty(), "{:?}", config.ignored_keys);
        assert_eq!(config.api.port, 8080);
        assert_eq!(config.plugins, Some(PathBuf::from("plugins.yml")));
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = Config::parse("token: x\nsystem:\n  backups:\n    compression_level: fast\n")
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("system.backups.compression_level:"),
            "{err}"
        );
        let err = Config::parse("token: x\napi:\n  port: http\n").unwrap_err();
        assert!(err.to_string().starts_with("api.port:"), "{err}");
        let err = Config::parse("token: ''\n").unwrap_err();
        assert!(err.to_string().starts_with("token:"), "{err}");
    }

    #[test]
    fn connection_bounds_default_and_refuse_zero() {
        let config = Config::parse("token: x\n").unwrap();
        assert_eq!(config.api.read_timeout, 30);
        assert_eq!(config.api.max_connections, 1024);
        assert_eq!(config.api.websocket_auth_timeout, 30);
        for key in ["read_timeout", "max_connections", "websocket_auth_timeout"] {
            let err = Config::parse(&format!("token: x\napi:\n  {key}: 0\n")).unwrap_err();
            assert!(err.to_string().starts_with(&format!("api.{key}:")), "{err}");
        }
    }

    #[test]
    fn absurd_rate_limits_are_refused_naming_the_key() {
        let err =
            Config::parse("token: x\nsystem:\n  backups:\n    write_limit: 18446744073709551615\n")
                .unwrap_err();
        assert!(
            err.to_string().starts_with("system.backups.write_limit:"),
            "{err}"
        );
        let err =
            Config::parse("token: x\nsystem:\n  backup_write_limit: 17592186044416\n").unwrap_err();
        assert!(
            err.to_string().starts_with("system.backup_write_limit:"),
            "{err}"
        );
        let config =
            Config::parse("token: x\nsystem:\n  backup_write_limit: 17592186044415\n").unwrap();
        assert_eq!(config.write_limit_bytes(), Some(17592186044415 * MIB));
    }

    #[test]
    fn allowlist_entries_are_parsed_once_and_a_bad_one_names_its_place() {
        let config = Config::parse(
            "token: x\nsystem:\n  backups:\n    restore_host_allowlist: [10.0.0.0/8, minio.internal]\n",
        )
        .unwrap();
        assert_eq!(
            config.system.backups.restore_host_allowlist,
            vec![
                "10.0.0.0/8".parse::<AllowEntry>().unwrap(),
                "minio.internal".parse().unwrap()
            ]
        );
        let err = Config::parse(
            "token: x\nsystem:\n  backups:\n    restore_host_allowlist: [ok.example, '*.example']\n",
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(
                "system.backups.restore_host_allowlist[1]: invalid restore_host_allowlist entry \"*.example\""
            ),
            "{err}"
        );
    }

    #[test]
    fn ssl_and_upstream_are_read_and_checked() {
        let config = Config::parse(
            "token: x\napi:\n  ssl:\n    enabled: true\n    cert: /etc/le/fullchain.pem\n    key: /etc/le/privkey.pem\nupstream:\n  url: http://127.0.0.1:8081\n",
        )
        .unwrap();
        assert!(config.api.ssl.enabled);
        assert_eq!(config.api.ssl.key, PathBuf::from("/etc/le/privkey.pem"));
        assert_eq!(config.upstream.unwrap().url, "http://127.0.0.1:8081");
        assert_eq!(config.system.backups.restore_stop_timeout, 120);
        let err = Config::parse("token: x\napi:\n  ssl:\n    enabled: true\n").unwrap_err();
        assert!(err.to_string().starts_with("api.ssl.cert:"), "{err}");
        let err = Config::parse("token: x\nupstream:\n  url: 127.0.0.1:8081\n").unwrap_err();
        assert!(err.to_string().starts_with("upstream.url:"), "{err}");
    }

    #[test]
    fn the_metrics_listener_is_off_by_default_and_its_address_is_checked() {
        assert_eq!(Config::parse("token: x\n").unwrap().metrics.bind, None);
        let config = Config::parse("token: x\nmetrics:\n  bind: 127.0.0.1:9101\n").unwrap();
        assert_eq!(config.metrics.bind, Some("127.0.0.1:9101".parse().unwrap()));
        let err = Config::parse("token: x\nmetrics:\n  bind: localhost\n").unwrap_err();
        assert!(err.to_string().starts_with("metrics.bind:"), "{err}");
    }

    #[test]
    fn the_shutdown_timeout_defaults_to_a_minute_and_may_be_zero() {
        let config = Config::parse("token: x\n").unwrap();
        assert_eq!(config.system.shutdown_timeout, 60);
        let config = Config::parse("token: x\nsystem:\n  shutdown_timeout: 0\n").unwrap();
        assert_eq!(config.system.shutdown_timeout, 0);
        let err = Config::parse("token: x\nsystem:\n  shutdown_timeout: -1\n").unwrap_err();
        assert!(
            err.to_string().starts_with("system.shutdown_timeout:"),
            "{err}"
        );
    }

    #[test]
    fn periodic_verification_is_off_unless_set_and_its_read_limit_defaults() {
        let config = Config::parse("token: x\n").unwrap();
        assert_eq!(config.verify_interval(), None);
        assert_eq!(config.verify_read_limit_bytes(), Some(16 * MIB));
        let config = Config::parse(
            "token: x\nsystem:\n  backups:\n    verify_interval: 86400\n    verify_read_limit: 0\n",
        )
        .unwrap();
        assert_eq!(
            config.verify_interval(),
            Some(std::time::Duration::from_secs(86400))
        );
        assert_eq!(config.verify_read_limit_bytes(), None);
        let config =
            Config::parse("token: x\nsystem:\n  backups:\n    verify_interval: 0\n").unwrap();
        assert_eq!(config.verify_interval(), None);
    }

    #[test]
    fn the_older_write_limit_key_is_read() {
        let config = Config::parse("token: x\nsystem:\n  backup_write_limit: 2\n").unwrap();
        assert_eq!(config.write_limit_bytes(), Some(2 * 1024 * 1024));
        let config = Config::parse("token: x\n").unwrap();
        assert_eq!(config.write_limit_bytes(), None);
    }
}
