//! A bounded queue of lines that takes memory only for the lines it holds.
//!
//! `std::sync::mpsc::sync_channel(n)` allocates and writes all `n` slots at once: for the 16 384
//! lines litestream's output may queue behind a slow reader, 640 KiB that an idle supervisor
//! keeps resident forever. Here the slots grow with a burst, and shrink back once it has been
//! written out. Same contract as `sync_channel`'s `try_send` / `recv` / `try_recv`.

use std::collections::VecDeque;
use std::sync::mpsc::{RecvError, TryRecvError, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Room kept after a burst; beyond it, an emptied queue gives its memory back.
const KEEP: usize = 64;

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    senders: usize,
    receiver: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock cannot leave the queue half-changed: recover it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side; clones send to the same queue.
pub(super) struct Sender<T>(Arc<Shared<T>>);

/// The receiving side.
pub(super) struct Receiver<T>(Arc<Shared<T>>);

/// A queue of at most `capacity` items.
pub(super) fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            receiver: true,
        }),
        ready: Condvar::new(),
        capacity,
    });
    (Sender(shared.clone()), Receiver(shared))
}

impl<T> Sender<T> {
    /// Queues `item` unless the queue is full or the receiver is gone; never blocks on a reader.
    pub(super) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = self.0.lock();
        if !state.receiver {
            return Err(TrySendError::Disconnected(item));
        }
        if state.items.len() >= self.0.capacity {
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        drop(state);
        self.0.ready.notify_one();
        Ok(())
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("capacity", &self.0.capacity)
            .finish_non_exhaustive()
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.senders -= 1;
        if state.senders == 0 {
            drop(state);
            self.0.ready.notify_all();
        }
    }
}

impl<T> Receiver<T> {
    /// The next item, waiting for one; an error once every sender is gone and the queue empty.
    pub(super) fn recv(&self) -> Result<T, RecvError> {
        let mut state = self.0.lock();
        loop {
            if let Some(item) = take(&mut state) {
                return Ok(item);
            }
            if state.senders == 0 {
                return Err(RecvError);
            }
            state = self.0.ready.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The next item if one is queued.
    pub(super) fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut state = self.0.lock();
        match take(&mut state) {
            Some(item) => Ok(item),
            None if state.senders == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver = false;
        state.items.clear();
    }
}

/// The front item; an emptied queue that grew in a burst gives the memory back.
fn take<T>(state: &mut State<T>) -> Option<T> {
    let item = state.items.pop_front()?;
    if state.items.is_empty() && state.items.capacity() > KEEP {
        state.items.shrink_to(KEEP);
    }
    Some(item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_then_drained_in_order_then_disconnected() {
        let (tx, rx) = bounded(3);
        for i in 0..3 {
            tx.try_send(i).unwrap();
        }
        assert!(matches!(tx.try_send(9), Err(TrySendError::Full(9))));
        let tx2 = tx.clone();
        drop(tx);
        assert_eq!(rx.recv(), Ok(0));
        assert_eq!(rx.try_recv(), Ok(1));
        tx2.try_send(3).unwrap();
        drop(tx2);
        assert_eq!(rx.recv(), Ok(2));
        assert_eq!(rx.recv(), Ok(3));
        assert_eq!(rx.recv(), Err(RecvError));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn a_sender_finds_the_receiver_gone_and_a_waiting_receiver_is_woken() {
        let (tx, rx) = bounded::<u32>(2);
        let reader = std::thread::spawn(move || {
            let got = rx.recv();
            (got, rx)
        });
        tx.try_send(7).unwrap();
        let (got, rx) = reader.join().unwrap();
        assert_eq!(got, Ok(7));
        drop(rx);
        assert!(matches!(tx.try_send(8), Err(TrySendError::Disconnected(8))));
    }

    #[test]
    fn a_burst_is_given_back_once_written_out() {
        let (tx, rx) = bounded(10_000);
        for i in 0..10_000 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_ok() {}
        assert!(rx.0.lock().items.capacity() <= KEEP);
    }
}
