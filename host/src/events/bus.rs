//! The event bus: what happens to a server's backups, fanned out to every websocket watching
//! that server. Publishing never waits on a subscriber: each keeps its own queue, and a
//! subscriber that falls behind keeps only the newest progress of each job and loses console
//! lines first; final events are never dropped: a subscriber whose queue is full of them is
//! cut off instead (its socket closes), so it never silently misses an outcome.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// The most events a subscriber that never reads may hold; beyond it console lines go
/// first, then old progress, and a queue of nothing but final events cuts the subscriber off.
pub const MAX_QUEUED: usize = 1024;

/// One event, as a websocket frame carries it: `{"event": name, "args": [arg]}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event's name, e.g. `backup completed`.
    pub name: String,
    /// Its one argument (JSON text or plain text), if any.
    pub arg: Option<String>,
    /// What a lagging subscriber's queue may do with it.
    pub delivery: Delivery,
}

/// How a lagging subscriber's queue treats an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// An outcome or a start: always delivered, in order.
    Final,
    /// Progress of the job with this key (a backup uuid): a newer one replaces an older one
    /// still queued.
    ProgressOf(String),
    /// A console line: the first to go when the queue is full.
    Transient,
}

impl Event {
    /// A final event with one argument: never dropped.
    pub fn new(name: impl Into<String>, arg: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            arg: Some(arg.into()),
            delivery: Delivery::Final,
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
            delivery: Delivery::ProgressOf(key.into()),
            ..Self::new(name, arg)
        }
    }

    /// A console line: dropped first when a subscriber lags.
    pub fn transient(name: impl Into<String>, arg: impl Into<String>) -> Self {
        Self {
            delivery: Delivery::Transient,
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
    /// Events not yet taken, oldest first.
    queue: Mutex<Queue>,
    /// Wakes the subscriber when an event arrives.
    ready: Notify,
}

/// A subscriber's waiting events.
#[derive(Default)]
struct Queue {
    /// Events not yet taken, oldest first.
    events: VecDeque<Event>,
    /// Set when the queue was full of final events: the subscriber is cut off.
    overflowed: bool,
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
        if let Delivery::ProgressOf(key) = &event.delivery {
            // A newer progress of the same thing supersedes one still waiting.
            if let Some(waiting) = queue.events.iter_mut().find(|e| {
                e.name == event.name && matches!(&e.delivery, Delivery::ProgressOf(k) if k == key)
            }) {
                *waiting = event;
                drop(queue);
                self.ready.notify_one();
                return;
            }
        }
        if queue.events.len() >= MAX_QUEUED && !queue.make_room() {
            queue.overflowed = true;
            queue.events.clear();
        } else if !queue.overflowed {
            queue.events.push_back(event);
        }
        drop(queue);
        self.ready.notify_one();
    }
}

impl Queue {
    /// Drops the oldest console line, or else the oldest progress; false when only final
    /// events are queued.
    fn make_room(&mut self) -> bool {
        let victim = self
            .events
            .iter()
            .position(|e| e.delivery == Delivery::Transient)
            .or_else(|| {
                self.events
                    .iter()
                    .position(|e| matches!(e.delivery, Delivery::ProgressOf(_)))
            });
        victim.map(|at| self.events.remove(at)).is_some()
    }
}

impl Subscription {
    /// The next event, waiting for one if none is queued; `None` once the subscriber fell
    /// so far behind that its queue held nothing but final events (close its socket).
    pub async fn next(&self) -> Option<Event> {
        loop {
            {
                let mut queue = self.subscriber.queue.lock().expect("queue lock");
                if queue.overflowed {
                    return None;
                }
                if let Some(event) = queue.events.pop_front() {
                    return Some(event);
                }
            }
            self.subscriber.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(subscription: &Subscription) -> Event {
        subscription.next().await.expect("not cut off")
    }

    #[tokio::test]
    async fn console_lines_filling_a_lagging_queue_never_push_out_a_final_event() {
        let bus = EventBus::default();
        let subscription = bus.subscribe("s1");
        bus.publish("s1", Event::new("backup completed", "b1"));
        for line in 0..3 * MAX_QUEUED {
            bus.publish("s1", Event::transient("daemon message", line.to_string()));
        }
        bus.publish("s1", Event::new("backup restore completed", ""));
        assert_eq!(next(&subscription).await.name, "backup completed");
        let mut rest = Vec::new();
        while let Some(event) = subscription
            .subscriber
            .queue
            .lock()
            .unwrap()
            .events
            .pop_front()
        {
            rest.push(event);
        }
        assert_eq!(rest.len(), MAX_QUEUED - 1);
        assert_eq!(rest.last().unwrap().name, "backup restore completed");
        // The newest console lines are the ones kept.
        assert_eq!(
            rest[0].arg.as_deref(),
            Some(&*(2 * MAX_QUEUED + 2).to_string())
        );
    }

    #[tokio::test]
    async fn a_subscriber_with_a_queue_full_of_final_events_is_cut_off() {
        let bus = EventBus::default();
        let subscription = bus.subscribe("s1");
        for n in 0..=MAX_QUEUED {
            bus.publish("s1", Event::new("backup completed", n.to_string()));
        }
        assert_eq!(subscription.next().await, None);
        bus.publish("s1", Event::new("backup completed", "later"));
        assert_eq!(subscription.next().await, None);
    }

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
        assert_eq!(next(&subscription).await.arg.as_deref(), Some("99"));
        assert_eq!(next(&subscription).await.name, "backup completed");
        assert_eq!(next(&subscription).await.arg.as_deref(), Some("7"));
        assert!(other.subscriber.queue.lock().unwrap().events.is_empty());
        drop(subscription);
        bus.publish("s1", Event::new("x", "y"));
        assert!(!bus.subscribers.lock().unwrap().contains_key("s1"));
    }
}
