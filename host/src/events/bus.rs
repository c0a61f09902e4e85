//! The event bus: what happens to a server's backups, fanned out to every websocket watching
//! that server. Publishing never waits on a subscriber: each keeps its own queue, and a
//! subscriber that falls behind keeps only the newest progress of each backup (final events
//! are always kept, in order).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// The most events a subscriber that never reads may hold; beyond it the oldest go.
const MAX_QUEUED: usize = 1024;

/// One event, as a websocket frame carries it: `{"event": name, "args": [arg]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event's name, e.g. `backup completed`.
    pub name: String,
    /// Its one argument (JSON text or plain text), if any.
    pub arg: Option<String>,
    /// For progress events, what they are progress of; a newer one replaces an older one
    /// with the same key in a lagging subscriber's queue.
    pub progress_of: Option<String>,
}

impl Event {
    /// An event with one argument.
    pub fn new(name: impl Into<String>, arg: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            arg: Some(arg.into()),
            progress_of: None,
        }
    }

    /// A progress event about `key` (a backup uuid): only the newest is kept for a lagging
    /// subscriber.
    pub fn progress(
        name: impl Into<String>,
        key: impl Into<String>,
        arg: impl Into<String>,
    ) -> Self {
        Self {
            progress_of: Some(key.into()),
            ..Self::new(name, arg)
        }
    }
}

/// Routes events by server.
#[derive(Default)]
pub struct EventBus {
    subscribers: Mutex<HashMap<String, Vec<Weak<Subscriber>>>>,
}

/// One subscriber's queue.
#[derive(Default)]
struct Subscriber {
    queue: Mutex<VecDeque<Event>>,
    ready: Notify,
}

/// A live subscription to one server's events; dropping it unsubscribes.
pub struct Subscription {
    subscriber: Arc<Subscriber>,
}

impl EventBus {
    /// Subscribes to the events of `server`.
    pub fn subscribe(&self, server: &str) -> Subscription {
        let subscriber = Arc::new(Subscriber::default());
        self.subscribers
            .lock()
            .expect("bus lock")
            .entry(server.to_string())
            .or_default()
            .push(Arc::downgrade(&subscriber));
        Subscription { subscriber }
    }

    /// Publishes `event` to every subscriber of `server`, without waiting on any.
    pub fn publish(&self, server: &str, event: Event) {
        let mut subscribers = self.subscribers.lock().expect("bus lock");
        let Some(list) = subscribers.get_mut(server) else {
            return;
        };
        list.retain(|weak| match weak.upgrade() {
            Some(subscriber) => {
                subscriber.push(event.clone());
                true
            }
            None => false,
        });
        if list.is_empty() {
            subscribers.remove(server);
        }
    }
}

impl Subscriber {
    fn push(&self, event: Event) {
        let mut queue = self.queue.lock().expect("queue lock");
        if let Some(key) = &event.progress_of {
            // A newer progress of the same thing supersedes one still waiting.
            if let Some(waiting) = queue
                .iter_mut()
                .find(|e| e.progress_of.as_ref() == Some(key) && e.name == event.name)
            {
                *waiting = event;
                drop(queue);
                self.ready.notify_one();
                return;
            }
        }
        if queue.len() >= MAX_QUEUED {
            queue.pop_front();
        }
        queue.push_back(event);
        drop(queue);
        self.ready.notify_one();
    }
}

impl Subscription {
    /// The next event, waiting for one if none is queued.
    pub async fn next(&self) -> Event {
        loop {
            if let Some(event) = self
                .subscriber
                .queue
                .lock()
                .expect("queue lock")
                .pop_front()
            {
                return event;
            }
            self.subscriber.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_lagging_subscriber_keeps_the_newest_progress_and_every_final_event_in_order() {
        let bus = EventBus::default();
        let subscription = bus.subscribe("s1");
        let other = bus.subscribe("s2");
        for done in 0..100 {
            bus.publish(
                "s1",
                Event::progress("backup progress", "b1", done.to_string()),
            );
        }
        bus.publish("s1", Event::new("backup completed", "b1"));
        bus.publish("s1", Event::progress("backup progress", "b2", "7"));
        assert_eq!(subscription.next().await.arg.as_deref(), Some("99"));
        assert_eq!(subscription.next().await.name, "backup completed");
        assert_eq!(subscription.next().await.arg.as_deref(), Some("7"));
        assert!(other.subscriber.queue.lock().unwrap().is_empty());
        drop(subscription);
        bus.publish("s1", Event::new("x", "y"));
        assert!(!bus.subscribers.lock().unwrap().contains_key("s1"));
    }
}
