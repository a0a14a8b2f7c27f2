//! How many JPEG encodes run at once, handed out urgent first. Decoding is
//! the serial part of a video's pipeline, so encodes get the cores the
//! decoders leave; a requested frame's encode must not queue behind encodes
//! of prefetched frames, which a FIFO semaphore would make it do.

use crate::urgency::Urgency;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

pub struct EncodeSlots {
    state: Arc<Mutex<State>>,
    slots: usize,
}

struct State {
    free: usize,
    waiting: VecDeque<(Urgency, oneshot::Sender<Slot>)>,
}

/// One encode may run while this is held.
pub struct Slot {
    state: Arc<Mutex<State>>,
}

impl EncodeSlots {
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        Self { state: Arc::new(Mutex::new(State { free: slots, waiting: VecDeque::new() })), slots }
    }

    /// Encodes that may run at once.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Waits for a slot; urgent waiters are served before the others, each
    /// kind in arrival order. Dropping the future gives up the place (and a
    /// slot already handed to it goes to the next waiter).
    pub async fn acquire(&self, urgency: Urgency) -> Slot {
        let granted = {
            let mut state = self.state.lock().expect("encode slots");
            if state.free > 0 {
                state.free -= 1;
                return Slot { state: self.state.clone() };
            }
            let (grant, granted) = oneshot::channel();
            state.waiting.push_back((urgency, grant));
            granted
        };
        granted.await.expect("a waiter is only dropped by handing it a slot")
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.state.lock().expect("encode slots");
        state.waiting.retain(|(_, grant)| !grant.is_closed());
        let next = state.waiting.iter().position(|(urgency, _)| urgency.is_urgent()).unwrap_or(0);
        let Some((_, grant)) = state.waiting.remove(next) else {
            state.free += 1;
            return;
        };
        drop(state);
        // If that waiter has just left, the slot comes back here and its own
        // drop hands it to the next one.
        let _ = grant.send(Slot { state: self.state.clone() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn urgent_waiters_go_first() {
        let slots = Arc::new(EncodeSlots::new(1));
        let held = slots.acquire(Urgency::requested()).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (name, urgency) in
            [("ahead 1", Urgency::ahead()), ("ahead 2", Urgency::ahead()), ("requested", Urgency::requested())]
        {
            let (slots, order) = (slots.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire(urgency).await;
                order.lock().unwrap().push(name);
            }));
            settle().await;
        }
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["requested", "ahead 1", "ahead 2"]);
    }

    #[tokio::test]
    async fn raised_waiter_overtakes() {
        let slots = Arc::new(EncodeSlots::new(1));
        let held = slots.acquire(Urgency::requested()).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let late = Urgency::ahead();
        let mut tasks = Vec::new();
        for (name, urgency) in [("first", Urgency::ahead()), ("raised", late.clone())] {
            let (slots, order) = (slots.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire(urgency).await;
                order.lock().unwrap().push(name);
            }));
            settle().await;
        }
        late.raise();
        drop(held);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["raised", "first"]);
    }

    #[tokio::test]
    async fn abandoned_waiters_do_not_lose_slots() {
        let slots = Arc::new(EncodeSlots::new(1));
        let held = slots.acquire(Urgency::requested()).await;
        let gone = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(Urgency::requested()).await }
        });
        settle().await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(5), slots.acquire(Urgency::ahead())).await;
        assert!(again.is_ok(), "the slot of a waiter that left must be handed on");
    }
}
