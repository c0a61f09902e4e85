//! The host's board of backup hints: what the host knows about each running backup (an
//! upper bound of its archive's size), posted before the adapter's `begin_backup` and taken
//! down when the backup ends. The host measures the tree beside the archive rather than
//! before it, so a hint may be asked for before it is known: the asker then waits for the
//! measurement, which reads no file and so ends long before the archive does.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use crate::services::BackupHints;

/// What an adapter hears when the host has nothing to say about a backup.
const NO_HINTS: &str = "{}";

/// The hints of the running backups, by backup uuid.
#[derive(Default)]
pub(crate) struct HintBoard(Mutex<HashMap<String, Arc<HintSlot>>>);

impl HintBoard {
    /// Posts an empty slot for `backup`: the adapter may ask from now on, and waits until
    /// the returned filler fills it (or is dropped).
    pub(crate) fn post(self: &Arc<Self>, backup: &str) -> (HintsPost, HintsFiller) {
        let slot = Arc::new(HintSlot::default());
        lock(&self.0).insert(backup.to_string(), slot.clone());
        let post = HintsPost {
            posted: Some((self.clone(), backup.to_string(), slot.clone())),
        };
        (post, HintsFiller { slot: Some(slot) })
    }

    /// The hints of `backup` as JSON, waiting for them if they are not known yet; `{}` when
    /// nothing is posted for it.
    pub(crate) fn hints_of(&self, backup: &str) -> String {
        let slot = lock(&self.0).get(backup).cloned();
        match slot {
            Some(slot) => slot.wait(),
            None => NO_HINTS.to_string(),
        }
    }
}

/// One backup's hints: empty until filled, then fixed.
#[derive(Default)]
struct HintSlot {
    json: Mutex<Option<String>>,
    filled: Condvar,
}

impl HintSlot {
    /// Fills the slot unless it is filled already, and wakes whoever waits.
    fn fill(&self, json: String) {
        let mut value = lock(&self.json);
        if value.is_none() {
            *value = Some(json);
            self.filled.notify_all();
        }
    }

    fn wait(&self) -> String {
        let mut value = lock(&self.json);
        loop {
            if let Some(json) = value.as_ref() {
                return json.clone();
            }
            value = self
                .filled
                .wait(value)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A backup's place on the board, from before its `begin_backup` until dropped at the end
/// of the backup; inert for an adapter that took no services.
#[must_use = "the hints are taken down when this is dropped"]
pub struct HintsPost {
    posted: Option<(Arc<HintBoard>, String, Arc<HintSlot>)>,
}

impl HintsPost {
    /// A post for an adapter that cannot ask.
    pub(crate) fn inert() -> (HintsPost, HintsFiller) {
        (HintsPost { posted: None }, HintsFiller { slot: None })
    }
}

impl Drop for HintsPost {
    fn drop(&mut self) {
        if let Some((board, backup, slot)) = self.posted.take() {
            lock(&board.0).remove(&backup);
            // Nobody may wait for hints of a backup that is over.
            slot.fill(NO_HINTS.to_string());
        }
    }
}

/// Fills a backup's hints once the host knows them. Dropped unfilled (the measurement was
/// cancelled), it fills in "no hints", so that no adapter waits forever.
#[must_use = "dropped unfilled, the backup has no hints"]
pub struct HintsFiller {
    slot: Option<Arc<HintSlot>>,
}

impl HintsFiller {
    /// Gives the adapter `hints`.
    pub fn fill(mut self, hints: &BackupHints) {
        if let Some(slot) = self.slot.take() {
            slot.fill(serde_json::to_string(hints).expect("backup hints serialize"));
        }
    }
}

impl Drop for HintsFiller {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.fill(NO_HINTS.to_string());
        }
    }
}

/// A lock that a panic elsewhere does not poison: every value here is written whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

    #[test]
    fn an_adapter_asking_before_the_hints_are_known_gets_them_once_filled() {
        let board = Arc::new(HintBoard::default());
        let (_post, filler) = board.post("b1");
        let asker = {
            let board = board.clone();
            thread::spawn(move || board.hints_of("b1"))
        };
        filler.fill(&BackupHints::with_size_upper_bound(42));
        // Whether the asker came before or after the fill, it gets the filled hints.
        let json = asker.join().unwrap();
        let hints: BackupHints = serde_json::from_str(&json).unwrap();
        assert_eq!(hints.size_upper_bound, Some(42));
    }

    #[test]
    fn a_filler_dropped_unfilled_answers_no_hints_instead_of_blocking() {
        let board = Arc::new(HintBoard::default());
        let (_post, filler) = board.post("b1");
        drop(filler);
        assert_eq!(board.hints_of("b1"), NO_HINTS);
    }

    #[test]
    fn hints_are_taken_down_with_their_post_and_kept_apart_by_backup() {
        let board = Arc::new(HintBoard::default());
        let (post, filler) = board.post("b1");
        let (_other, other_filler) = board.post("b2");
        filler.fill(&BackupHints::with_size_upper_bound(1));
        other_filler.fill(&BackupHints::with_size_upper_bound(2));
        assert!(board.hints_of("b2").contains('2'));
        drop(post);
        assert_eq!(board.hints_of("b1"), NO_HINTS);
        assert!(board.hints_of("b2").contains('2'));
    }
}
