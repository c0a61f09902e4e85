//! The one-off tools for operators that need no daemon: `check`, `ws-token` and
//! `download-link`, run against a node's config.

use aerie::config::Config;

use super::daemon::base_url;
use super::events::mint_token;

/// How long a download link minted here is valid, as the Panel's are (15 minutes).
const DOWNLOAD_LINK_LIFETIME: i64 = 900;

/// `aerie check`: the config, its TLS pair and its adapters load; in front of Wings, Wings
/// answers.
pub fn check(config: &Config) -> anyhow::Result<()> {
    if config.api.ssl.enabled {
        aerie::tls::Tls::load(&config.api.ssl)?;
    }
    let services = aerie::events::presign::PanelServices::from_config(config)?;
    aerie::plugins::Adapters::load(
        config.plugins.as_deref(),
        &config.system.backup_directory,
        std::sync::Arc::new(services),
    )?;
    println!("aerie: the config and its adapters are good");
    check_upstream(config)
}

/// `aerie ws-token SERVER`: a websocket token as the Panel signs them.
pub fn ws_token(config: &Config, server: &str) {
    println!("{}", mint_token(&config.token, server));
}

/// `aerie download-link SERVER BACKUP`: a one-time download link as the Panel makes them.
pub fn download_link(config: &Config, server: &str, backup: &str) -> anyhow::Result<()> {
    let now = aerie::jwt::unix_now();
    let claims = serde_json::json!({
        "iat": now, "nbf": now, "exp": now + DOWNLOAD_LINK_LIFETIME,
        "server_uuid": server, "backup_uuid": backup,
        "unique_id": uuid::Uuid::new_v4().simple().to_string(),
    });
    let token = aerie::jwt::sign(&claims, config.token.as_bytes());
    let mut link = base_url(config)?.join("download/backup")?;
    link.query_pairs_mut().append_pair("token", &token);
    println!("{link}");
    Ok(())
}

/// `aerie check` in front of Wings: asks Wings' `/api/system` with the node token, prints
/// whether it answers, and fails the check when it does not (the Panel would see 502s).
fn check_upstream(config: &Config) -> anyhow::Result<()> {
    let Some(upstream) = &config.upstream else {
        return Ok(());
    };
    let wings = std::sync::Arc::new(aerie::upstream::Wings::new(&upstream.url, &config.token));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(aerie::upstream::proxy::Proxy::new(wings.clone()).probe());
    match answer {
        Ok(version) => {
            println!("aerie: upstream {} answers: {version}", wings.url);
            Ok(())
        }
        Err(cause) => anyhow::bail!(
            "upstream.url: Wings at {} does not answer GET /api/system: {cause}",
            wings.url
        ),
    }
}
