//! Which servers are being backed up or restored right now: any number of backups of a
//! server may run together, but a restore runs alone, so that it never unpacks into a
//! directory another job is reading or writing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What a server is busy with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// This many backups are running.
    Backups(usize),
    /// A restore is running.
    Restore,
}

/// The activity of every busy server.
#[derive(Default)]
pub struct ServerLocks {
    busy: Mutex<HashMap<String, Activity>>,
}

/// Held for the length of one job; releases its share of the server when dropped.
pub struct ServerGuard {
    locks: Arc<ServerLocks>,
    server: String,
}

impl ServerLocks {
    /// Claims `server` for a backup, unless it is being restored (then returns what it is
    /// busy with).
    pub fn try_backup(self: &Arc<Self>, server: &str) -> Result<ServerGuard, Activity> {
        let mut busy = self.busy.lock().expect("locks");
        match busy.get_mut(server) {
            Some(Activity::Restore) => return Err(Activity::Restore),
            Some(Activity::Backups(count)) => *count += 1,
            None => {
                busy.insert(server.to_string(), Activity::Backups(1));
            }
        }
        Ok(self.guard(server))
    }

    /// Whether `server` is being restored now (from the restore request until it ended):
    /// what refuses power actions for it in front of Wings.
    pub fn is_restoring(&self, server: &str) -> bool {
        matches!(
            self.busy.lock().expect("locks").get(server),
            Some(Activity::Restore)
        )
    }

    /// Claims `server` for a restore, unless anything else runs on it.
    pub fn try_restore(self: &Arc<Self>, server: &str) -> Result<ServerGuard, Activity> {
        let mut busy = self.busy.lock().expect("locks");
        if let Some(activity) = busy.get(server) {
            return Err(*activity);
        }
        busy.insert(server.to_string(), Activity::Restore);
        Ok(self.guard(server))
    }

    fn guard(self: &Arc<Self>, server: &str) -> ServerGuard {
        ServerGuard {
            locks: self.clone(),
            server: server.to_string(),
        }
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let mut busy = self.locks.busy.lock().expect("locks");
        match busy.get_mut(&self.server) {
            Some(Activity::Backups(count)) if *count > 1 => *count -= 1,
            _ => {
                busy.remove(&self.server);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backups_share_a_server_and_a_restore_runs_alone() {
        let locks = Arc::new(ServerLocks::default());
        let first = locks.try_backup("s1").unwrap();
        let second = locks.try_backup("s1").unwrap();
        assert_eq!(locks.try_restore("s1").err(), Some(Activity::Backups(2)));
        let other = locks.try_restore("s2").unwrap();
        assert_eq!(locks.try_backup("s2").err(), Some(Activity::Restore));
        assert!(locks.is_restoring("s2"));
        assert!(!locks.is_restoring("s1"));
        drop((first, second, other));
        let restore = locks.try_restore("s1").unwrap();
        assert_eq!(locks.try_restore("s1").err(), Some(Activity::Restore));
        drop(restore);
        assert!(locks.try_backup("s1").is_ok());
    }
}
