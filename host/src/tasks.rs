//! One way to start, cancel and await the daemon's tasks: a [`TaskGroup`] is a cancellation
//! token and a tracker. Each job runs under a child token, so deleting one job and stopping
//! the whole group are the same call; the blocking pipelines poll the token.

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
    /// stopping (new work is refused). [`TaskGroup::stop`] waits until the place is dropped,
    /// so work admitted here is never cut off unawaited between its check and its spawn.
    pub fn enter(&self) -> Option<TaskTrackerToken> {
        let place = self.tracker.token();
        (!self.cancel.is_cancelled()).then_some(place)
    }

    /// Runs `task` on the runtime as one of the group's tasks.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// Cancels every task of the group and waits until all of them (and every place taken
    /// with [`TaskGroup::enter`]) have ended.
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
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
