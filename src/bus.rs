//! In-process fan-out of committed run changes to live event streams.
//!
//! Only changes that are already committed are published, so a subscriber never sees a state
//! the store does not have. A slow subscriber that falls behind loses live messages and must
//! catch up from the persisted log (the SSE route does this with the event sequence numbers).

use crate::domain::run::{EventRecord, RunRecord};
use std::sync::Arc;
use tokio::sync::broadcast;

/// How many changes a subscriber may lag behind before it must re-read the log.
const CAPACITY: usize = 4096;

/// One committed change: the events and the run as it stands after them.
#[derive(Debug, Clone)]
pub struct RunChange {
    /// The events committed with the change (never empty).
    pub events: Vec<EventRecord>,
    /// The run after the change.
    pub run: Arc<RunRecord>,
}

/// The publisher side; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<RunChange>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// A bus with no subscribers.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CAPACITY);
        Self { sender }
    }

    /// Publishes a committed change (no-op without subscribers).
    pub fn publish(&self, events: Vec<EventRecord>, run: &RunRecord) {
        if events.is_empty() {
            return;
        }
        let _ = self.sender.send(RunChange {
            events,
            run: Arc::new(run.clone()),
        });
    }

    /// A new subscription that sees every change published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RunChange> {
        self.sender.subscribe()
    }
}
