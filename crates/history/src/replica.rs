//! What replicas exchange, and the rules that merge it. No IO here.
//!
//! History is a set of rows, one per (origin, day, topic), plus sketches per
//! (day, topic) and (day, site). An *origin* is one data directory: a random
//! id made with it, so a node that lost its disk counts as a new origin and
//! the rows of the old one stay valid wherever they were copied.
//!
//! - A row's `views` only grows and its `peak` only rises, and only its
//!   origin writes it, so replicas merge rows field by field with `max`.
//! - Sketches merge by union.
//!
//! Both merges are idempotent, commutative and associative: a batch may
//! arrive twice, late or out of order and every replica still ends equal.
//! Each origin numbers its flushes 1, 2, 3, ...; a row carries the number
//! of the flush that last changed it, and a replica remembers, per origin,
//! the highest number up to which it holds everything (its *have*). A pull
//! asks for the rows numbered above the puller's haves, so it carries what
//! changed, not the whole history.

use std::collections::HashMap;

use headcount_counter::Topic;
use headcount_proto::cluster as wire;

use crate::{
    day::Day,
    salt::Salt,
    sketch::{InvalidSketch, Visitors},
};

/// An origin's id: random, made with its data directory.
pub type Origin = u64;

/// One origin's counting of one topic on one day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Who counted.
    pub origin: Origin,
    /// The UTC day.
    pub day: Day,
    /// The topic.
    pub topic: Topic,
    /// The origin's flush that last changed the row.
    pub version: u64,
    /// Views the origin took, in total.
    pub views: u64,
    /// Highest cluster-wide count the origin saw.
    pub peak: u64,
}

/// The stored part of a row: (version, views, peak).
pub type RowValue = (u64, u64, u64);

/// The merge rule of two copies of one row: field-wise max. Returns the
/// merged value when it differs from `stored`.
pub fn merge_row(stored: Option<RowValue>, incoming: RowValue) -> Option<RowValue> {
    let merged = match stored {
        None => incoming,
        Some((version, views, peak)) => (version.max(incoming.0), views.max(incoming.1), peak.max(incoming.2)),
    };
    (Some(merged) != stored).then_some(merged)
}

/// Whether a sketch counts the visitors of a topic or of a whole site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// One topic.
    Topic,
    /// A site: every topic whose first path segment is the name.
    Site,
}

impl Scope {
    /// The stored tag.
    pub fn tag(self) -> u8 {
        match self {
            Self::Topic => 0,
            Self::Site => 1,
        }
    }
}

/// Visitors of one topic or site on one day.
#[derive(Debug, Clone, PartialEq)]
pub struct SketchPart {
    /// The UTC day.
    pub day: Day,
    /// Topic or site.
    pub scope: Scope,
    /// The topic, or the site's name.
    pub name: String,
    /// The visitors.
    pub visitors: Visitors,
}

/// Rows and sketches going from one replica to another.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Rows, any origins.
    pub rows: Vec<Row>,
    /// Sketches to union in.
    pub sketches: Vec<SketchPart>,
    /// In a pull answer: up to which flush the answer covers each origin.
    pub haves: HashMap<Origin, u64>,
    /// The sender's salt of the day, if it has one.
    pub salt: Option<Salt>,
}

/// A batch or request from a peer that does not hold valid history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidBatch {
    /// A day number that is no day.
    #[error("invalid day")]
    Day,
    /// A topic that is not a valid topic.
    #[error("invalid topic")]
    Topic,
    /// A site name longer than any topic.
    #[error("invalid site")]
    Site,
    /// Sketch bytes that do not decode.
    #[error("{0}")]
    Sketch(#[from] InvalidSketch),
    /// A salt that is not 32 bytes.
    #[error("invalid salt")]
    Salt,
}

fn day(number: i32) -> Result<Day, InvalidBatch> {
    Day::from_number(number).ok_or(InvalidBatch::Day)
}

/// Origin versions from the wire.
pub fn haves_from_wire(haves: Vec<wire::OriginVersion>) -> HashMap<Origin, u64> {
    haves.into_iter().map(|have| (have.origin, have.version)).collect()
}

/// Origin versions for the wire.
pub fn haves_to_wire(haves: &HashMap<Origin, u64>) -> Vec<wire::OriginVersion> {
    haves
        .iter()
        .map(|(&origin, &version)| wire::OriginVersion { origin, version })
        .collect()
}

/// A salt from the wire.
pub fn salt_from_wire(salt: Option<wire::DailySalt>) -> Result<Option<Salt>, InvalidBatch> {
    salt.map(|salt| {
        Ok(Salt {
            day: day(salt.day)?,
            created_ms: salt.created_ms,
            bytes: salt.salt.try_into().map_err(|_| InvalidBatch::Salt)?,
        })
    })
    .transpose()
}

/// A salt for the wire.
pub fn salt_to_wire(salt: Option<&Salt>) -> Option<wire::DailySalt> {
    salt.map(|salt| wire::DailySalt {
        day: salt.day.number(),
        created_ms: salt.created_ms,
        salt: salt.bytes.to_vec(),
    })
}

impl Batch {
    /// Checks and converts a batch from a peer: every day, topic, site and
    /// sketch must be valid, or none of the batch is taken.
    pub fn from_wire(batch: wire::HistoryBatch) -> Result<Self, InvalidBatch> {
        let rows = batch
            .rows
            .into_iter()
            .map(|row| {
                Ok(Row {
                    origin: row.origin,
                    day: day(row.day)?,
                    topic: Topic::new(&row.topic).map_err(|_| InvalidBatch::Topic)?,
                    version: row.version,
                    views: row.views,
                    peak: row.peak,
                })
            })
            .collect::<Result<_, InvalidBatch>>()?;
        let sketches = batch
            .sketches
            .into_iter()
            .map(|sketch| {
                let scope = if sketch.site { Scope::Site } else { Scope::Topic };
                let valid = match scope {
                    Scope::Topic => Topic::new(&sketch.name).is_ok(),
                    Scope::Site => sketch.name.len() <= headcount_counter::MAX_TOPIC_BYTES,
                };
                if !valid {
                    return Err(if scope == Scope::Topic {
                        InvalidBatch::Topic
                    } else {
                        InvalidBatch::Site
                    });
                }
                Ok(SketchPart {
                    day: day(sketch.day)?,
                    scope,
                    name: sketch.name,
                    visitors: Visitors::decode(&sketch.hll)?,
                })
            })
            .collect::<Result<_, InvalidBatch>>()?;
        Ok(Self {
            rows,
            sketches,
            haves: haves_from_wire(batch.haves),
            salt: salt_from_wire(batch.salt)?,
        })
    }

    /// The wire form.
    pub fn to_wire(&self) -> wire::HistoryBatch {
        wire::HistoryBatch {
            rows: self
                .rows
                .iter()
                .map(|row| wire::HistoryRow {
                    origin: row.origin,
                    day: row.day.number(),
                    topic: row.topic.to_string(),
                    version: row.version,
                    views: row.views,
                    peak: row.peak,
                })
                .collect(),
            sketches: self
                .sketches
                .iter()
                .map(|sketch| wire::HistorySketch {
                    day: sketch.day.number(),
                    site: sketch.scope == Scope::Site,
                    name: sketch.name.clone(),
                    hll: sketch.visitors.encode(),
                })
                .collect(),
            haves: haves_to_wire(&self.haves),
            salt: salt_to_wire(self.salt.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn fold(values: &[RowValue]) -> Option<RowValue> {
        values
            .iter()
            .fold(None, |stored, incoming| merge_row(stored, *incoming).or(stored))
    }

    proptest! {
        #[test]
        fn rows_merge_in_any_order_and_any_number_of_times(
            mut values in proptest::collection::vec((0u64..10, 0u64..1000, 0u64..100), 1..12),
            seed in any::<u64>(),
        ) {
            let expected = fold(&values);
            let mut twice = values.clone();
            twice.extend(values.iter().copied());
            prop_assert_eq!(fold(&twice), expected);
            let rotate = usize::try_from(seed % values.len() as u64).unwrap_or(0);
            values.rotate_left(rotate);
            values.reverse();
            prop_assert_eq!(fold(&values), expected);
        }
    }

    #[test]
    fn a_row_never_goes_back() {
        assert_eq!(merge_row(Some((3, 10, 4)), (2, 7, 9)), Some((3, 10, 9)));
        assert_eq!(merge_row(Some((3, 10, 4)), (2, 7, 1)), None, "nothing new");
        assert_eq!(merge_row(None, (1, 1, 0)), Some((1, 1, 0)));
    }

    #[test]
    fn invalid_batches_are_refused_whole() {
        let valid = wire::HistoryRow {
            origin: 1,
            day: Day::parse("2026-11-30").expect("valid").number(),
            topic: "example.com/".into(),
            version: 1,
            views: 1,
            peak: 1,
        };
        let mut bad_topic = valid.clone();
        bad_topic.topic = String::new();
        let mut bad_day = valid.clone();
        bad_day.day = i32::MAX;
        for (rows, expected) in [
            (vec![valid.clone(), bad_topic], InvalidBatch::Topic),
            (vec![bad_day], InvalidBatch::Day),
        ] {
            let batch = wire::HistoryBatch {
                rows,
                ..Default::default()
            };
            assert_eq!(Batch::from_wire(batch).err(), Some(expected));
        }
        let garbage = wire::HistoryBatch {
            sketches: vec![wire::HistorySketch {
                day: valid.day,
                site: true,
                name: "example.com".into(),
                hll: vec![1, 2, 3],
            }],
            ..Default::default()
        };
        assert!(matches!(Batch::from_wire(garbage), Err(InvalidBatch::Sketch(_))));
        let short_salt = wire::HistoryBatch {
            salt: Some(wire::DailySalt {
                day: valid.day,
                created_ms: 1,
                salt: vec![0; 8],
            }),
            ..Default::default()
        };
        assert_eq!(Batch::from_wire(short_salt).err(), Some(InvalidBatch::Salt));
    }
}
