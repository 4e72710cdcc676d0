//! Connection slots shared fairly by client addresses, for the gRPC and
//! the admin listeners alike (`AddressSlots`):
//!
//! - at most a number of connections from one IP, and in all;
//! - the last eighth of all is a reserve (`Reserve`) that only an address
//!   holding fewer than its share may take: as many as leave two slots (a
//!   fresh client, kubelet's probe or the Prometheus scraper) when 16
//!   addresses hold their share, at least 1 and at most 4 (4 from a reserve
//!   of 66, the defaults' included; 1 under 34). Whatever 16 other
//!   addresses hold, a new one is let in. The call slots keep a reserve by
//!   the same rule (`ShedLayer`).
//!
//! A reserve rather than shedding the oldest idle holder when full: it is
//! a comparison at accept, where shedding would need every connection's
//! idleness in one place and would close connections that did nothing
//! wrong. A share fitted to the reserve's size rather than a fixed few: with
//! "fewer than 4" whatever the size, 16 addresses holding 3 calls each
//! filled the 18 reserved of 144. Not one slot an address whatever the
//! size: a client whose probe's connection is still closing could then not
//! open the next. The idle and age limits give the reserve's slots back.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use parking_lot::Mutex;

use super::capacity::{Capacity, Slot};

/// The largest share of the reserve one address may take.
const SMALL_HOLDER: usize = 4;

/// Addresses that may hold their share of the reserve and leave it two
/// slots: a fresh address and the health probe.
const RESERVE_HOLDERS: usize = 16;

/// The reserve of `total` slots (connections or calls): its last eighth,
/// and how much of it one address may take.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reserve {
    size: usize,
    /// An address holding fewer than this may take a slot of the reserve.
    share: usize,
}

impl Reserve {
    pub(super) fn of(total: usize) -> Self {
        let size = total / 8;
        Self {
            size,
            share: (size.saturating_sub(2) / RESERVE_HOLDERS).clamp(1, SMALL_HOLDER),
        }
    }

    /// Whether an address holding `held` is refused when `available` slots
    /// are left. Never for an empty reserve (under 8 slots): the refusal
    /// is then the total's.
    pub(super) fn refuses(self, held: usize, available: usize) -> bool {
        self.size > 0 && available <= self.size && held >= self.share
    }
}

/// Why `AddressSlots::admit` refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address holds its share already.
    PerAddress,
    /// Every slot is taken.
    Total,
    /// Only the reserve is left, and the address holds its share of it.
    Reserve,
}

/// The connection slots of one listener; see the module docs.
pub struct AddressSlots {
    total: Arc<Capacity>,
    reserve: Reserve,
    open: Mutex<HashMap<IpAddr, Address>>,
    per_address: usize,
    calls_per_address: usize,
}

struct Address {
    connections: usize,
    /// Shared by the address's connections (`--max-calls-per-peer`).
    calls: Arc<Capacity>,
}

/// One connection's slot: given back, and its address counted down, when
/// it is dropped.
pub struct AddressSlot {
    _total: Slot,
    slots: Arc<AddressSlots>,
    ip: IpAddr,
    /// Its address's call slots.
    pub(super) calls: Arc<Capacity>,
}

impl AddressSlots {
    /// `total` connections, at most `per_address` from one IP, whose calls
    /// share `calls_per_address` call slots.
    pub fn new(total: usize, per_address: usize, calls_per_address: usize) -> Arc<Self> {
        Arc::new(Self {
            total: Capacity::new(total),
            reserve: Reserve::of(total),
            open: Mutex::default(),
            per_address,
            calls_per_address,
        })
    }

    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<AddressSlot, Refusal> {
        let mut open = self.open.lock();
        let address = open.entry(ip).or_insert_with(|| Address {
            connections: 0,
            calls: Capacity::new(self.calls_per_address),
        });
        let held = address.connections;
        let admitted = if held >= self.per_address {
            Err(Refusal::PerAddress)
        } else if self.reserve.refuses(held, self.total.available()) {
            Err(Refusal::Reserve)
        } else {
            self.total.try_take().ok_or(Refusal::Total)
        };
        match admitted {
            Ok(permit) => {
                address.connections += 1;
                Ok(AddressSlot {
                    _total: permit,
                    slots: self.clone(),
                    ip,
                    calls: address.calls.clone(),
                })
            }
            Err(refusal) => {
                if held == 0 {
                    open.remove(&ip);
                }
                Err(refusal)
            }
        }
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock();
        if let Some(address) = open.get_mut(&self.ip) {
            address.connections -= 1;
            if address.connections == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn an_address_holds_at_most_its_connections_and_gets_them_back() {
        let slots = AddressSlots::new(64, 2, 3);
        let first = slots.admit(ip(1)).unwrap();
        let second = slots.admit(ip(1)).unwrap();
        assert_eq!(slots.admit(ip(1)).err(), Some(Refusal::PerAddress));
        assert!(slots.admit(ip(2)).is_ok());
        assert!(
            Arc::ptr_eq(&first.calls, &second.calls),
            "one IP, one call bound"
        );
        drop(first);
        assert!(slots.admit(ip(1)).is_ok());
    }

    #[test]
    fn the_last_eighth_is_kept_for_addresses_holding_few() {
        // 16 slots, a reserve of 2; each address may hold 8.
        let slots = AddressSlots::new(16, 8, 1);
        let mut held: Vec<AddressSlot> = Vec::new();
        for address in [1, 2] {
            while let Ok(slot) = slots.admit(ip(address)) {
                held.push(slot);
            }
        }

        assert_eq!(held.len(), 14, "all but the reserve");
        assert_eq!(slots.admit(ip(1)).err(), Some(Refusal::PerAddress));
        assert_eq!(slots.admit(ip(2)).err(), Some(Refusal::Reserve));
        let fresh = [slots.admit(ip(3)), slots.admit(ip(4))];
        assert!(
            fresh.iter().all(Result::is_ok),
            "new addresses take the reserve"
        );
        assert_eq!(slots.admit(ip(5)).err(), Some(Refusal::Total));
        assert!(
            slots.open.lock().get(&ip(5)).is_none(),
            "no trace of a refused address"
        );
    }

    #[test]
    fn many_small_holders_leave_the_reserve_to_a_fresh_address_and_the_probe() {
        // 144 slots, a reserve of 18; one address holds all the rest.
        let slots = AddressSlots::new(144, 144, 1);
        let mut held: Vec<AddressSlot> = Vec::new();
        while let Ok(slot) = slots.admit(ip(1)) {
            held.push(slot);
        }
        assert_eq!(held.len(), 126, "all but the reserve");

        // 16 addresses each ask for 3.
        let mut small = 0;
        for address in 10..26 {
            for _ in 0..3 {
                if let Ok(slot) = slots.admit(ip(address)) {
                    held.push(slot);
                    small += 1;
                }
            }
        }

        assert_eq!(small, 16, "one reserve slot each");
        assert!(slots.admit(ip(99)).is_ok(), "a fresh address is let in");
        assert!(slots.admit(ip(100)).is_ok(), "and the probe");
    }

    #[test]
    fn sixteen_addresses_holding_their_share_leave_two_slots_of_any_reserve() {
        for total in [16, 144, 527, 528, 1024, 4096] {
            let reserve = Reserve::of(total);
            assert!(
                (1..=SMALL_HOLDER).contains(&reserve.share),
                "{total}: {reserve:?}"
            );
            if reserve.size >= 2 + RESERVE_HOLDERS {
                assert!(
                    RESERVE_HOLDERS * reserve.share + 2 <= reserve.size,
                    "{total}: {reserve:?}"
                );
            }
        }
        assert_eq!(Reserve::of(1024).share, 4, "the default calls' reserve");
        assert_eq!(Reserve::of(144).share, 1);
    }

    #[test]
    fn under_eight_slots_there_is_no_reserve_to_refuse_for() {
        let slots = AddressSlots::new(3, 3, 1);
        let held: Vec<_> = (0..3).map(|_| slots.admit(ip(1)).unwrap()).collect();
        assert_eq!(slots.admit(ip(1)).err(), Some(Refusal::PerAddress));
        assert_eq!(slots.admit(ip(2)).err(), Some(Refusal::Total));
        drop(held);
    }
}
