//! One way to start, cancel and await the daemon's tasks: a [`TaskGroup`] is a cancellation
//! token and a tracker. Each job runs under a child token, so deleting one job and stopping
//! the whole group are the same call; the blocking pipelines poll the token.
//!
//! A group can also be closed without being cancelled: it admits no new work while what
//! runs goes on to its end. That is how a shutdown lets running backups and restores finish
//! (see [`crate::run`] for the order): their group holds nothing else, so that waiting for
//! it waits for exactly them, not for the tasks that only end when cancelled (the Panel
//! notifier, the websockets), which live in groups of their own.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// The token every cancellable task and pipeline takes (re-exported so that callers of
/// `archive` and `restore::extract` need no dependency of their own).
pub use tokio_util::sync::CancellationToken;

/// Tasks that are cancelled together and awaited together.
#[derive(Clone, Default)]
pub struct TaskGroup {
    /// Cancelled when the group stops; every task's token is this one or a child of it.
    cancel: CancellationToken,
    /// Every task of the group, so that stopping can wait for all of them.
    tracker: TaskTracker,
}

impl TaskGroup {
    /// A new group, running until [`TaskGroup::stop`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A token for one task of the group: cancelled with the group, or on its own.
    pub fn child_token(&self) -> CancellationToken {
        self.cancel.child_token()
    }

    /// A place among the group's tasks for work about to start, or `None` once the group is
    /// closed (new work is refused). Waiting for the group waits until the place is dropped,
    /// so work admitted here is never cut off unawaited between its check and its spawn.
    pub fn enter(&self) -> Option<TaskTrackerToken> {
        let place = self.tracker.token();
        (!self.tracker.is_closed()).then_some(place)
    }

    /// Runs `task` on the runtime as one of the group's tasks.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Admits no new work from now on ([`TaskGroup::enter`] returns `None`); the tasks
    /// running go on.
    pub fn close(&self) {
        self.tracker.close();
    }

    /// How many tasks of the group are running, places taken with [`TaskGroup::enter`]
    /// included.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Waits until the group is closed and all of its tasks (and places) have ended.
    pub async fn ended(&self) {
        self.tracker.wait().await;
    }

    /// Cancels every task of the group and waits until all of them (and every place taken
    /// with [`TaskGroup::enter`]) have ended. The group admits no new work from then on.
    pub async fn stop(&self) {
        self.tracker.close();
        self.cancel.cancel();
        self.ended().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_cancels_children_and_waits_for_every_task() {
        let group = TaskGroup::new();
        let token = group.child_token();
        let (ended_tx, mut ended_rx) = tokio::sync::oneshot::channel();
        group.spawn(async move {
            token.cancelled().await;
            let _ = ended_tx.send(());
        });
        group.stop().await;
        assert!(
            ended_rx.try_recv().is_ok(),
            "the task ran to its end before stop returned"
        );
        assert!(
            group.enter().is_none(),
            "a stopping group admits no new work"
        );
    }

    #[tokio::test]
    async fn a_child_token_cancels_alone() {
        let group = TaskGroup::new();
        let (one, other) = (group.child_token(), group.child_token());
        one.cancel();
        assert!(!other.is_cancelled());
        assert!(group.enter().is_some(), "the group runs on");
    }

    #[tokio::test]
    async fn a_closed_group_refuses_new_work_and_lets_the_running_task_end_on_its_own() {
        let group = TaskGroup::new();
        let token = group.child_token();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let task = group.spawn(async move {
            let _ = go_rx.await;
            token.is_cancelled()
        });
        group.close();
        assert!(group.enter().is_none(), "a closed group admits no new work");
        assert_eq!(group.running(), 1);
        let ended = group.clone();
        let waiting = tokio::spawn(async move { ended.ended().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the running task holds the wait");
        go_tx.send(()).unwrap();
        waiting.await.unwrap();
        assert_eq!(group.running(), 0);
        assert!(
            !task.await.unwrap(),
            "the task ended on its own, not cancelled"
        );
    }

    #[tokio::test]
    async fn stop_waits_for_a_place_taken_before_it() {
        let group = TaskGroup::new();
        let place = group.enter().expect("running");
        let stopping = group.clone();
        let stopped = tokio::spawn(async move { stopping.stop().await });
        // The group is cancelled at once, but not stopped while the place is held.
        while group.enter().is_some() {
            tokio::task::yield_now().await;
        }
        assert!(!stopped.is_finished());
        drop(place);
        stopped.await.unwrap();
    }
}
