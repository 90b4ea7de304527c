//! Handshake slots shared fairly between routes: `limits.max_handshakes` slots for the whole
//! proxy, at most `routes[].limits.max_handshakes` of them for one route.
//!
//! A plain semaphore hands freed slots to waiters in arrival order, so a route whose clients all
//! reconnect at once (a broker restart, a flapping mobile network) fills the queue and every other
//! route's client waits behind its whole herd. Here each route waits in its own FIFO queue, and a
//! freed slot goes to the **next route in turn** among those waiting (round robin over routes,
//! equal weights): with `k` routes waiting, each gets every `k`-th freed slot, so a route holding
//! more than its share gives slots back as its handshakes finish and cannot take them again while
//! another route waits. A quiet route's client waits for one handshake to finish, not for a herd.
//! A route at its own `max_handshakes` is skipped in the turn until one of its slots is free.
//!
//! Deficit round robin or weights would only matter with unequal costs or priorities; every
//! route's handshake costs about the same, and no route is more important than another here.
//!
//! A waiter that gives up (its wait bound passed, or the client left) is skipped when its turn
//! comes: the slot handed to it comes straight back.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The proxy's handshake slots.
#[derive(Debug)]
pub struct HandshakeGate {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// `limits.max_handshakes`.
    capacity: usize,
    in_progress: usize,
    /// Routes holding a slot or waiting for one; an entry leaves when it does neither.
    routes: HashMap<Arc<str>, RouteSlots>,
    /// Routes with waiters, the next to be served first. A route appears at most once.
    turn: VecDeque<Arc<str>>,
}

#[derive(Debug)]
struct RouteSlots {
    /// The route's `limits.max_handshakes` as its latest caller saw it (`usize::MAX`: none).
    max: usize,
    in_progress: usize,
    waiters: VecDeque<oneshot::Sender<HandshakeSlot>>,
}

/// One handshake in progress; dropping it frees the slot for the next route in turn.
#[derive(Debug)]
pub struct HandshakeSlot {
    /// `None` once given back by hand (a waiter that had left).
    held: Option<(Arc<HandshakeGate>, Arc<str>)>,
}

/// Where a route's caller stands right after asking.
enum Ask {
    Granted(HandshakeSlot),
    Queued(oneshot::Receiver<HandshakeSlot>),
}

impl HandshakeGate {
    pub fn new(capacity: usize) -> Arc<HandshakeGate> {
        Arc::new(HandshakeGate {
            state: Mutex::new(State { capacity, in_progress: 0, routes: HashMap::new(), turn: VecDeque::new() }),
        })
    }

    /// A new `limits.max_handshakes` (a reload). Handshakes in progress finish; slots freed while
    /// more than `capacity` are in progress are not handed on.
    pub fn set_capacity(self: &Arc<Self>, capacity: usize) {
        let mut state = self.lock();
        state.capacity = capacity;
        self.dispatch(&mut state);
    }

    /// A slot for one of `route`'s handshakes, at most `route_max` of them at once; waits for
    /// its turn. Bound the wait with a timeout: dropping the future leaves the queue.
    pub async fn acquire(self: &Arc<Self>, route: &str, route_max: Option<usize>) -> HandshakeSlot {
        match self.ask(route, route_max.unwrap_or(usize::MAX)) {
            Ask::Granted(slot) => slot,
            // The sender is dropped only after a slot was sent, or with the gate: neither while a
            // caller holds the gate to wait on it.
            Ask::Queued(receiver) => receiver.await.unwrap_or_else(|_| HandshakeSlot { held: None }),
        }
    }

    /// Handshakes in progress, in all and for `route` (for metrics and tests).
    pub fn in_progress(&self, route: &str) -> (usize, usize) {
        let state = self.lock();
        (state.in_progress, state.routes.get(route).map_or(0, |slots| slots.in_progress))
    }

    fn ask(self: &Arc<Self>, route: &str, route_max: usize) -> Ask {
        let mut state = self.lock();
        let state = &mut *state;
        let free = state.in_progress < state.capacity;
        let key = match state.routes.get_key_value(route) {
            Some((key, _)) => key.clone(),
            None => Arc::from(route),
        };
        let slots = state.routes.entry(key.clone()).or_insert_with(|| RouteSlots {
            max: route_max,
            in_progress: 0,
            waiters: VecDeque::new(),
        });
        slots.max = route_max;
        while slots.waiters.front().is_some_and(|waiter| waiter.is_closed()) {
            slots.waiters.pop_front();
        }
        // First come, first served within a route: no overtaking its own waiters.
        if free && slots.in_progress < slots.max && slots.waiters.is_empty() {
            slots.in_progress += 1;
            state.in_progress += 1;
            return Ask::Granted(HandshakeSlot { held: Some((self.clone(), key)) });
        }
        let (sender, receiver) = oneshot::channel();
        slots.waiters.push_back(sender);
        if !state.turn.contains(&key) {
            state.turn.push_back(key);
        }
        Ask::Queued(receiver)
    }

    /// Hands free slots to the routes in turn, each route's waiters first come, first served.
    fn dispatch(self: &Arc<Self>, state: &mut State) {
        // Every pass either hands out a slot, drops a waiter that left, or skips a route that is
        // at its own cap; a full round of skips ends it.
        let mut skipped_in_a_row = 0;
        while state.in_progress < state.capacity && skipped_in_a_row < state.turn.len() {
            let Some(key) = state.turn.pop_front() else { break };
            let Some(slots) = state.routes.get_mut(&key) else { continue };
            if slots.in_progress >= slots.max {
                state.turn.push_back(key);
                skipped_in_a_row += 1;
                continue;
            }
            let Some(waiter) = slots.waiters.pop_front() else {
                forget_if_idle(&mut state.routes, &key);
                continue;
            };
            slots.in_progress += 1;
            state.in_progress += 1;
            let slot = HandshakeSlot { held: Some((self.clone(), key.clone())) };
            if let Err(mut unsent) = waiter.send(slot) {
                // That waiter left: take the slot back without re-entering the lock.
                unsent.held = None;
                slots.in_progress -= 1;
                state.in_progress -= 1;
            } else {
                skipped_in_a_row = 0;
            }
            let slots = state.routes.get(&key).expect("entry still there");
            if slots.waiters.is_empty() {
                forget_if_idle(&mut state.routes, &key);
            } else {
                // Served (or skipped a departed waiter): to the back of the turn.
                state.turn.push_back(key);
            }
        }
    }

    fn release(self: &Arc<Self>, route: &str) {
        let mut state = self.lock();
        state.in_progress -= 1;
        if let Some(slots) = state.routes.get_mut(route) {
            slots.in_progress -= 1;
            if slots.in_progress == 0 && slots.waiters.is_empty() {
                state.routes.remove(route);
            }
        }
        self.dispatch(&mut state);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn forget_if_idle(routes: &mut HashMap<Arc<str>, RouteSlots>, key: &str) {
    if routes.get(key).is_some_and(|slots| slots.in_progress == 0 && slots.waiters.is_empty()) {
        routes.remove(key);
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        if let Some((gate, route)) = self.held.take() {
            gate.release(&route);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Polls `future` once: its output if it is ready.
    fn now_or_never<F: std::future::Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        let waker = std::task::Waker::noop();
        match future.as_mut().poll(&mut std::task::Context::from_waker(waker)) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn slots_are_granted_up_to_the_capacity() {
        let gate = HandshakeGate::new(2);
        let a = gate.acquire("a", None).await;
        let _b = gate.acquire("b", None).await;
        assert_eq!(gate.in_progress("a"), (2, 1));
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire("a", None).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a);
        let _again = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert_eq!(gate.in_progress("a"), (2, 1));
    }

    #[tokio::test]
    async fn a_route_at_its_own_cap_waits_while_others_pass() {
        let gate = HandshakeGate::new(10);
        let held: Vec<_> = [gate.acquire("a", Some(2)).await, gate.acquire("a", Some(2)).await].into();
        assert!(now_or_never(gate.acquire("a", Some(2))).is_none());
        assert!(now_or_never(gate.acquire("b", Some(2))).is_some());
        drop(held);
        assert_eq!(gate.in_progress("a"), (0, 0));
    }

    #[tokio::test]
    async fn freed_slots_go_to_the_waiting_routes_in_turn() {
        // Route a holds every slot and queues 10 more; b then queues 2: b is served every other
        // time, not after a's 10.
        let gate = HandshakeGate::new(4);
        let mut held: VecDeque<HandshakeSlot> = VecDeque::new();
        for _ in 0..4 {
            held.push_back(gate.acquire("a", None).await);
        }
        let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for (route, count) in [("a", 10), ("b", 2)] {
            for _ in 0..count {
                let (gate, order_tx) = (gate.clone(), order_tx.clone());
                waiters.push(tokio::spawn(async move {
                    let slot = gate.acquire(route, None).await;
                    order_tx.send((route, slot)).unwrap();
                }));
                tokio::task::yield_now().await;
            }
        }
        let mut served = Vec::new();
        while served.len() < 12 {
            if let Some(slot) = held.pop_front() {
                drop(slot);
            }
            let (route, slot) = tokio::time::timeout(Duration::from_secs(5), order_rx.recv()).await.unwrap().unwrap();
            served.push(route);
            held.push_back(slot);
        }
        // Queued a×10 first, then b×2: the turn alternates while both wait.
        assert_eq!(&served[..4], ["a", "b", "a", "b"]);
        assert!(served[4..].iter().all(|&route| route == "a"));
    }

    #[tokio::test]
    async fn a_waiter_that_left_does_not_keep_its_slot() {
        let gate = HandshakeGate::new(1);
        let first = gate.acquire("a", None).await;
        let gave_up = tokio::time::timeout(Duration::from_millis(10), gate.acquire("a", None)).await;
        assert!(gave_up.is_err());
        drop(first);
        assert_eq!(gate.in_progress("a"), (0, 0));
        // And a later caller of the same route is not stuck behind the departed waiter.
        assert!(now_or_never(gate.acquire("a", None)).is_some());
    }

    #[tokio::test]
    async fn a_lower_capacity_holds_back_freed_slots_until_under_it() {
        let gate = HandshakeGate::new(2);
        let (a, b) = (gate.acquire("a", None).await, gate.acquire("a", None).await);
        gate.set_capacity(1);
        let waiting = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire("b", None).await }
        });
        tokio::task::yield_now().await;
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "1 in progress is the new capacity");
        drop(b);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
    }
}
