//! Register decoding under garbage: a BAR that answers with arbitrary values
//! must give errors or well-formed results, never a panic and never a time
//! whose nanoseconds are out of range.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use timecard_driver::bar::{Bar, BarError};
use timecard_driver::card::CardError;
use timecard_driver::{SystemClock, TimeCard};
use timecard_hw::pci::{Board, PciId};

/// A BAR whose reads come from a seeded generator, mixed with all-ones.
#[derive(Debug)]
struct GarbageBar {
    state: AtomicU64,
    ones_every: u64,
}

impl Bar for GarbageBar {
    fn read32(&self, _offset: u32) -> Result<u32, BarError> {
        let mut x = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 27;
        if self.ones_every != 0 && x.is_multiple_of(self.ones_every) {
            return Ok(u32::MAX);
        }
        Ok(x as u32)
    }

    fn write32(&self, _offset: u32, _value: u32) -> Result<(), BarError> {
        Ok(())
    }

    fn len(&self) -> u64 {
        32 << 20
    }

    fn describe(&self) -> String {
        "garbage".into()
    }

    fn pci_id(&self) -> PciId {
        Board::Meta.id()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn garbage_registers_never_panic_or_yield_bad_time(seed in any::<u64>(), ones_every in 0u64..8) {
        let bar = Arc::new(GarbageBar { state: AtomicU64::new(seed), ones_every });
        let Ok(card) = TimeCard::open(bar, Arc::new(SystemClock)) else {
            return Ok(());
        };
        for _ in 0..4 {
            match card.read_time() {
                Ok(r) => prop_assert!(r.card_tai_ns.rem_euclid(1_000_000_000) < 1_000_000_000 && r.card_tai_ns >= 0),
                Err(CardError::InvalidTime { ns, .. }) => prop_assert!(ns >= 1_000_000_000),
                Err(_) => {}
            }
            let _ = card.status();
            let _ = card.identify();
            let _ = card.clock_source();
            for i in 0..6 {
                let _ = card.poll_extts(i);
            }
            for i in 0..4 {
                let _ = card.read_freq(i);
                let _ = card.signal_status(i);
            }
        }
    }
}

#[test]
fn unknown_pci_id_is_refused() {
    #[derive(Debug)]
    struct Stranger;
    impl Bar for Stranger {
        fn read32(&self, _: u32) -> Result<u32, BarError> {
            Ok(0)
        }
        fn write32(&self, _: u32, _: u32) -> Result<(), BarError> {
            Ok(())
        }
        fn len(&self) -> u64 {
            4096
        }
        fn describe(&self) -> String {
            "stranger".into()
        }
        fn pci_id(&self) -> PciId {
            PciId::new(0x8086, 0x1533)
        }
    }
    let err = TimeCard::open(Arc::new(Stranger), Arc::new(SystemClock)).unwrap_err();
    assert!(matches!(err, CardError::UnknownBoard(_)));
    assert!(err.to_string().contains("8086:1533"), "{err}");
}
