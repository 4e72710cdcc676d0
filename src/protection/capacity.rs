//! `Capacity`: slots that are only ever tried for, never waited on.
//!
//! tokio's `Semaphore` is built for waiting: every permit it gives back
//! takes the lock of its list of waiters, even when, as for every limit
//! here, nobody ever waits (a call or connection over a limit is refused at
//! once). A call gives back three slots (its global, its address's and its
//! connection's), and those locks were about 250 instructions of each
//! GetProduct (callgrind), on lines both workers share. Here a slot is one
//! atomic count, taken with a compare-and-swap and given back with an add.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

/// A number of slots, of which `available` are free.
#[derive(Debug)]
pub struct Capacity {
    free: AtomicUsize,
}

/// One slot of a `Capacity`, free again when dropped.
#[derive(Debug)]
pub struct Slot(Arc<Capacity>);

impl Capacity {
    pub fn new(slots: usize) -> Arc<Self> {
        Arc::new(Self {
            free: AtomicUsize::new(slots),
        })
    }

    /// The slots free now.
    pub fn available(&self) -> usize {
        self.free.load(Ordering::Relaxed)
    }

    /// A slot, or `None` if every one is taken.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        self.try_take_counted().map(|(slot, _)| slot)
    }

    /// A slot and how many were free as it was taken (itself included), or
    /// `None` if every one is taken: two takers at the same instant are
    /// told different counts.
    pub fn try_take_counted(self: &Arc<Self>) -> Option<(Slot, usize)> {
        self.free
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |free| {
                free.checked_sub(1)
            })
            .ok()
            .map(|free| (Slot(self.clone()), free))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.free.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_until_none_is_free_and_come_back_when_dropped() {
        let capacity = Capacity::new(2);
        let first = capacity.try_take().expect("a first slot");
        let second = capacity.try_take().expect("a second slot");
        assert!(capacity.try_take().is_none());
        assert_eq!(capacity.available(), 0);
        drop(first);
        assert_eq!(capacity.available(), 1);
        let third = capacity.try_take().expect("the slot given back");
        drop((second, third));
        assert_eq!(capacity.available(), 2);
    }

    #[test]
    fn two_threads_never_take_more_slots_than_there_are() {
        let capacity = Capacity::new(1000);
        let taken: Vec<Vec<Slot>> = std::thread::scope(|scope| {
            let takers: Vec<_> = (0..2)
                .map(|_| scope.spawn(|| std::iter::from_fn(|| capacity.try_take()).collect()))
                .collect();
            takers
                .into_iter()
                .map(|taker| taker.join().unwrap())
                .collect()
        });
        assert_eq!(taken.iter().map(Vec::len).sum::<usize>(), 1000);
        assert_eq!(capacity.available(), 0);
    }
}
