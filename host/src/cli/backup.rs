//! `aerie backup ...`: backups made, listed, shown, deleted, restored and verified through
//! the running daemon's API, so that its registry, its locks and its Panel reports stay
//! the one record of what happened.

use std::path::PathBuf;
use std::time::Duration;

use aerie::config::Config;
use clap::{Args, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use super::daemon::Daemon;
use super::events::Events;
use super::exit::{Exit, Failure};
use super::output;
use super::progress::Progress;

/// How often `verify` asks how the verification is going (the daemon's own progress
/// events go out at this pace too).
const VERIFY_POLL: Duration = Duration::from_millis(500);

/// How often `create` asks for a backup's state when the event websocket closed before
/// the backup ended.
const STATUS_POLL: Duration = Duration::from_millis(500);

/// How long `create` waits for an event before it asks the daemon whether the backup is
/// still running: a socket that went quiet (a dropped connection the kernel has not noticed)
/// does not hold the command forever, and a long quiet backup is not failed.
const IDLE_CHECK: Duration = Duration::from_secs(30);

/// The start of the daemon message that ends a successful restore (`restore/mod.rs`).
const RESTORE_COMPLETED: &str = "Completed server restoration from ";

/// The start and a part of the daemon message that ends a failed restore.
const RESTORE_FAILED: (&str, &str) = ("Server restoration from ", " failed: ");

/// `aerie backup`: its options and what to do.
#[derive(Args)]
pub struct BackupArgs {
    /// Print one JSON value for scripts instead of text, and no progress.
    #[arg(long, global = true)]
    json: bool,

    /// What to do.
    #[command(subcommand)]
    command: BackupCommand,
}

/// The backup commands.
#[derive(Subcommand)]
enum BackupCommand {
    /// Back up a server, following the job until it ends; prints its uuid, SHA-1 and size.
    Create {
        /// The server's id.
        server: String,
        /// The adapter to store it with (a name from the plugins file).
        #[arg(long, default_value = "wings")]
        adapter: String,
        /// A file of gitignore-style lines to leave out (default: the server's .pteroignore).
        #[arg(long)]
        ignore: Option<PathBuf>,
    },
    /// List the backups of a server, or of every server, newest first.
    List {
        /// The server's id; all servers without it.
        server: Option<String>,
    },
    /// Show one backup, whatever its server.
    Show {
        /// The backup's uuid.
        backup: String,
    },
    /// Delete a backup (a running one is cancelled first).
    Delete {
        /// The server's id.
        server: String,
        /// The backup's uuid.
        backup: String,
    },
    /// Restore a backup into its server's directory, following the job until it ends.
    Restore {
        /// The server's id.
        server: String,
        /// The backup's uuid.
        backup: String,
        /// Empty the server's directory first.
        #[arg(long)]
        truncate: bool,
    },
    /// Read a stored backup back whole and check it against its recorded SHA-1 and size.
    Verify {
        /// The server's id.
        server: String,
        /// The backup's uuid.
        backup: String,
    },
}

/// Runs a backup command against the daemon `config` describes.
pub fn run(config: &Config, args: BackupArgs) -> anyhow::Result<()> {
    let daemon = Daemon::new(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let json = args.json;
    runtime.block_on(async {
        match args.command {
            BackupCommand::Create {
                server,
                adapter,
                ignore,
            } => create(&daemon, &server, &adapter, ignore, json).await,
            BackupCommand::List { server } => list(&daemon, server.as_deref(), json).await,
            BackupCommand::Show { backup } => {
                let found = daemon.get(&["api", "backups", &backup]).await?;
                output::print(json, &found, || output::details(&found));
                Ok(())
            }
            BackupCommand::Delete { server, backup } => {
                let path = ["api", "servers", &server, "backup", &backup];
                daemon.call(Method::DELETE, &path, None).await?;
                let deleted = json!({"uuid": backup, "server": server, "deleted": true});
                output::print(json, &deleted, || {
                    format!("aerie: deleted backup {backup} of server {server}")
                });
                Ok(())
            }
            BackupCommand::Restore {
                server,
                backup,
                truncate,
            } => restore(&daemon, &server, &backup, truncate, json).await,
            BackupCommand::Verify { server, backup } => {
                verify(&daemon, &server, &backup, json).await
            }
        }
    })
}

/// `list [SERVER]`: one server's backups, or every server's.
async fn list(daemon: &Daemon, server: Option<&str>, json: bool) -> anyhow::Result<()> {
    let listed = match server {
        Some(server) => daemon.get(&["api", "servers", server, "backups"]).await?,
        None => daemon.get(&["api", "backups"]).await?,
    };
    output::print(json, &listed, || output::table(&listed));
    Ok(())
}

/// `create`: the websocket is open before the backup is asked for, so its progress and
/// its end are seen; the outcome is then read from the daemon's record of it.
async fn create(
    daemon: &Daemon,
    server: &str,
    adapter: &str,
    ignore: Option<PathBuf>,
    json: bool,
) -> anyhow::Result<()> {
    let ignore = match ignore {
        Some(path) => std::fs::read_to_string(&path).map_err(|e| {
            Failure::new(
                Exit::Error,
                format!("--ignore: cannot read {}: {e}", path.display()),
            )
        })?,
        None => String::new(),
    };
    let uuid = uuid::Uuid::new_v4().to_string();
    let mut events = Events::open(daemon, server).await?;
    let request = json!({"adapter": adapter, "uuid": uuid, "ignore": ignore});
    let path = ["api", "servers", server, "backup"];
    daemon.call(Method::POST, &path, Some(&request)).await?;
    let mut progress = Progress::new("backup", &uuid, json);
    let status_path = ["api", "servers", server, "backup", &uuid];
    loop {
        let next = match tokio::time::timeout(IDLE_CHECK, events.next()).await {
            // A socket that failed is one that closed: the daemon's record tells the rest.
            Ok(next) => next.unwrap_or(None),
            Err(_) if daemon.get(&status_path).await?["state"] == "running" => continue,
            Err(_) => break,
        };
        let Some((name, arg)) = next else {
            break;
        };
        let Some(arg) = arg.and_then(|a| serde_json::from_str::<Value>(&a).ok()) else {
            continue;
        };
        if arg["uuid"] != uuid.as_str() {
            continue;
        }
        match name.as_str() {
            "backup progress" => progress.update(
                arg["bytes_done"].as_u64().unwrap_or(0),
                arg["bytes_total"].as_u64(),
            ),
            "backup completed" => break,
            _ => {}
        }
    }
    progress.finish();
    // The daemon's record says how it ended; when the socket closed early, it is asked
    // until the backup is no longer running.
    let status = loop {
        let status = daemon.get(&status_path).await?;
        if status["state"] != "running" {
            break status;
        }
        tokio::time::sleep(STATUS_POLL).await;
    };
    let outcome = json!({
        "uuid": uuid,
        "server": server,
        "adapter": status["adapter"],
        "outcome": status["state"],
        "sha1": status["checksum"],
        "size": status["size"],
        "error": status["error"],
    });
    output::print(json, &outcome, || output::created(&outcome));
    if status["state"] != "completed" {
        return Err(Failure::new(
            Exit::JobFailed,
            format!(
                "backup {uuid} failed: {}",
                status["error"].as_str().unwrap_or("no reason recorded")
            ),
        )
        .into());
    }
    Ok(())
}

/// `restore`: the websocket is open before the restore is asked for; the restore's last
/// daemon message says how it ended, `backup restore completed` that it has.
async fn restore(
    daemon: &Daemon,
    server: &str,
    backup: &str,
    truncate: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut events = Events::open(daemon, server).await?;
    let request = json!({"truncate_directory": truncate});
    let path = ["api", "servers", server, "backup", backup, "restore"];
    daemon.call(Method::POST, &path, Some(&request)).await?;
    let mut progress = Progress::new("restore", backup, json);
    let mut ending: Option<(bool, String)> = None;
    loop {
        let Some((name, arg)) = events.next().await? else {
            progress.finish();
            return Err(Failure::new(
                Exit::Error,
                format!(
                    "the daemon closed the event websocket before restore {backup} ended; \
                     its log says how it ended"
                ),
            )
            .into());
        };
        let arg = arg.unwrap_or_default();
        match name.as_str() {
            "backup restore progress" => {
                let arg: Value = serde_json::from_str(&arg).unwrap_or(Value::Null);
                if arg["uuid"] == backup {
                    progress.update(
                        arg["bytes_done"].as_u64().unwrap_or(0),
                        arg["bytes_total"].as_u64(),
                    );
                }
            }
            "daemon message" if arg.starts_with(RESTORE_COMPLETED) => ending = Some((true, arg)),
            "daemon message"
                if arg.starts_with(RESTORE_FAILED.0) && arg.contains(RESTORE_FAILED.1) =>
            {
                ending = Some((false, arg))
            }
            "backup restore completed" => break,
            _ => {}
        }
    }
    progress.finish();
    let (ok, message) = ending.unwrap_or((false, "the restore ended without saying how".into()));
    let outcome = json!({
        "uuid": backup,
        "server": server,
        "outcome": if ok { "completed" } else { "failed" },
        "message": message,
    });
    output::print(json, &outcome, || format!("aerie: {message}"));
    if !ok {
        return Err(Failure::new(
            Exit::JobFailed,
            format!("restore of backup {backup} failed"),
        )
        .into());
    }
    Ok(())
}

/// `verify`: starts the daemon's verification (or follows the one already running) and
/// asks how it goes until it is done; `--json` prints the daemon's `result` as it is.
async fn verify(daemon: &Daemon, server: &str, backup: &str, json: bool) -> anyhow::Result<()> {
    let path = ["api", "servers", server, "backups", backup, "verify"];
    match daemon.call(Method::POST, &path, None).await {
        Ok(_) => {}
        // One is running already: follow it.
        Err(failure) if failure.status == Some(StatusCode::CONFLICT.as_u16()) => {}
        Err(failure) => return Err(failure.into()),
    }
    let mut progress = Progress::new("verify", backup, json);
    let result = loop {
        let answer = daemon.get(&path).await?;
        if answer["state"] == "done" {
            break answer["result"].clone();
        }
        progress.update(
            answer["bytes"].as_u64().unwrap_or(0),
            answer["total"].as_u64(),
        );
        tokio::time::sleep(VERIFY_POLL).await;
    };
    progress.finish();
    output::print(json, &result, || output::verified(backup, &result));
    if result["ok"] != true {
        return Err(Failure::new(
            Exit::JobFailed,
            format!(
                "backup {backup} did not verify: {}",
                result["error"].as_str().unwrap_or("no reason given")
            ),
        )
        .into());
    }
    Ok(())
}
