//! The visitors of a topic (or a site) on one day: a HyperLogLog sketch.
//!
//! A sketch holds no visitor: only, per register, the longest run of zeros
//! seen among salted hashes, so with the day's salt forgotten nothing in it
//! leads back to anyone. 2^14 registers give a standard error of 0.8 %;
//! small sets are kept as a short list (4 bytes per visitor, exact up to
//! hash collisions) and grow into registers (8 KiB) as they fill.
//!
//! Merging is a union, register by register the larger value: idempotent,
//! commutative and associative, so replicas may merge in any order and as
//! often as messages arrive. The bytes are the Apache DataSketches HLL
//! format; bytes from a peer or the disk are checked when decoded.

use datasketches::hll::{Coupon, HllSketch, HllType, HllUnion};

/// log2 of the number of registers.
pub const LG_REGISTERS: u8 = 14;
const TYPE: HllType = HllType::Hll4;

/// The visitors of one topic or site on one day.
#[derive(Clone, PartialEq)]
pub struct Visitors(HllSketch);

/// Bytes that are not a sketch of this precision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a visitor sketch: {0}")]
pub struct InvalidSketch(String);

impl Visitors {
    /// No visitor yet.
    pub fn new() -> Self {
        match HllSketch::new(LG_REGISTERS, TYPE) {
            Ok(sketch) => Self(sketch),
            Err(_) => unreachable!("{LG_REGISTERS} lies in the supported range"),
        }
    }

    /// Adds the visitor whose salted key is `key`.
    pub fn insert(&mut self, key: u64) {
        self.0.update_with_coupon(Coupon::from_value(key));
    }

    /// Adds every visitor of `other`.
    pub fn merge(&mut self, other: &Visitors) {
        *self = Self::union([&*self, other]);
    }

    /// The union of many sketches, merged in one pass.
    pub fn union<'a>(sketches: impl IntoIterator<Item = &'a Visitors>) -> Self {
        let Ok(mut union) = HllUnion::new(LG_REGISTERS) else {
            unreachable!("{LG_REGISTERS} lies in the supported range")
        };
        for sketch in sketches {
            union.update(&sketch.0);
        }
        Self(union.to_sketch(TYPE))
    }

    /// The estimated number of distinct visitors. It depends on the
    /// registers alone, never on the order visitors came in or sketches
    /// were merged, so replicas holding the same registers agree.
    pub fn estimate(&self) -> u64 {
        let estimate = self.0.composite_estimate().round();
        // Float to integer casts saturate; an estimate is never negative.
        estimate as u64
    }

    /// Whether no visitor was ever added.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The stored and wire form.
    pub fn encode(&self) -> Vec<u8> {
        self.0.serialize()
    }

    /// Reads [`Visitors::encode`]'s form, refusing anything else.
    pub fn decode(bytes: &[u8]) -> Result<Self, InvalidSketch> {
        let sketch = HllSketch::deserialize(bytes).map_err(|error| InvalidSketch(error.to_string()))?;
        if sketch.lg_config_k() != LG_REGISTERS {
            return Err(InvalidSketch(format!("{} registers", 1u64 << sketch.lg_config_k())));
        }
        Ok(Self(sketch))
    }
}

impl Default for Visitors {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Visitors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Visitors(~{})", self.estimate())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn sketch_of(keys: &[u64]) -> Visitors {
        let mut sketch = Visitors::new();
        for key in keys {
            sketch.insert(*key);
        }
        sketch
    }

    fn merged(a: &Visitors, b: &Visitors) -> Visitors {
        let mut out = a.clone();
        out.merge(b);
        out
    }

    #[test]
    fn one_visitor_many_times_is_one() {
        assert_eq!(sketch_of(&[7; 50]).estimate(), 1);
        assert_eq!(Visitors::new().estimate(), 0);
    }

    #[test]
    fn ten_thousand_visitors_within_two_percent() {
        let keys: Vec<u64> = (0..10_000u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect();
        let estimate = sketch_of(&keys).estimate();
        assert!((9_800..=10_200).contains(&estimate), "estimate {estimate}");
    }

    #[test]
    fn decodes_what_it_encodes_and_refuses_garbage() {
        for size in [0u64, 3, 500, 20_000] {
            let keys: Vec<u64> = (0..size).collect();
            let sketch = sketch_of(&keys);
            let decoded = Visitors::decode(&sketch.encode()).expect("round trip");
            assert_eq!(decoded.estimate(), sketch.estimate());
        }
        assert!(Visitors::decode(b"").is_err());
        assert!(Visitors::decode(&[0xff; 64]).is_err());
        let other = HllSketch::new(10, HllType::Hll8).expect("valid").serialize();
        assert!(Visitors::decode(&other).is_err(), "another precision");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn merge_is_a_union(
            a in proptest::collection::vec(0u64..5_000, 0..3_000),
            b in proptest::collection::vec(0u64..5_000, 0..3_000),
            c in proptest::collection::vec(0u64..5_000, 0..3_000),
        ) {
            let (sa, sb, sc) = (sketch_of(&a), sketch_of(&b), sketch_of(&c));
            // Idempotent, commutative, associative: the same estimate
            // whatever the grouping, order or repetition.
            let once = merged(&sa, &Visitors::new()).estimate();
            prop_assert_eq!(merged(&sa, &sa).estimate(), once);
            prop_assert_eq!(merged(&merged(&sa, &sb), &sa).estimate(), merged(&sa, &sb).estimate());
            prop_assert_eq!(merged(&sa, &sb).estimate(), merged(&sb, &sa).estimate());
            prop_assert_eq!(
                merged(&merged(&sa, &sb), &sc).estimate(),
                merged(&sa, &merged(&sb, &sc)).estimate()
            );
            // Within four standard errors (0.8 % each) of the exact union, or
            // two visitors off for tiny sets.
            let exact: HashSet<u64> = a.iter().chain(&b).chain(&c).copied().collect();
            let estimate = merged(&merged(&sa, &sb), &sc).estimate() as f64;
            let truth = exact.len() as f64;
            prop_assert!((estimate - truth).abs() <= (truth * 0.033).max(2.0), "{} vs {}", estimate, truth);
        }

        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = Visitors::decode(&bytes).map(|sketch| sketch.estimate());
        }
    }
}
