//! The embedded store: one redb file under `--data-dir`.
//!
//! Tables (keys sort by day first, so a day's listing and a topic's range
//! are contiguous scans):
//!
//! | table | key | value |
//! | --- | --- | --- |
//! | `meta` | name | `schema`, `origin` (this directory's id), `version` (its last flush) |
//! | `rows` | (day, topic, origin) | (version, views, peak) |
//! | `changes` | (origin, version, day, topic) | (): which rows each flush last changed |
//! | `haves` | origin | highest flush held with everything before it |
//! | `sketches` | (day, scope, name) | DataSketches HLL bytes |
//!
//! Every write is one transaction, durable when it returns: this node's
//! flush ([`Store::flush`]) or a batch from a peer ([`Store::apply`]).
//! Nothing about a single visitor is in any table: views are totals and
//! sketches are registers under a salt that is never written.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    path::Path,
};

use headcount_counter::Topic;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

use crate::{
    day::Day,
    replica::{Batch, Origin, Row, RowValue, Scope, SketchPart, merge_row},
    sketch::Visitors,
    tally::{Pending, site_of},
};

/// The layout this code reads and writes.
pub const SCHEMA_VERSION: u64 = 1;
/// The store's file inside the data directory.
pub const FILE_NAME: &str = "history.redb";
/// Memory redb may keep of the file (its default is 1 GiB, which a node
/// holding a million websockets should not spend on history).
const CACHE_BYTES: usize = 32 * 1024 * 1024;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ROWS: TableDefinition<(i32, &str, u64), (u64, u64, u64)> = TableDefinition::new("rows");
const CHANGES: TableDefinition<(u64, u64, i32, &str), ()> = TableDefinition::new("changes");
const HAVES: TableDefinition<u64, u64> = TableDefinition::new("haves");
const SKETCHES: TableDefinition<(i32, u8, &str), &[u8]> = TableDefinition::new("sketches");

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be made.
    #[error("cannot create the directory: {0}")]
    Directory(std::io::Error),
    /// Another process (or node) has the store open.
    #[error("the store is in use by another headcount process; give each node its own --data-dir")]
    InUse,
    /// The database failed.
    #[error("store: {0}")]
    Database(redb::Error),
    /// The store was written by another layout.
    #[error("store has schema version {found}; this build reads {SCHEMA_VERSION}")]
    Schema {
        /// The version in the file.
        found: u64,
    },
    /// A stored sketch does not decode.
    #[error("stored sketch: {0}")]
    Sketch(#[from] crate::sketch::InvalidSketch),
}

fn db_error(error: impl Into<redb::Error>) -> StoreError {
    StoreError::Database(error.into())
}

/// One day of one topic, summed over origins.
#[derive(Debug, Clone, Default)]
pub struct DayTotals {
    /// Views over every origin.
    pub views: u64,
    /// Highest peak any origin saw.
    pub peak: u64,
    /// The topic's visitors that day.
    pub visitors: Visitors,
}

/// What one flush wrote, to push to peers.
#[derive(Debug)]
pub struct Flushed {
    /// The flush's number.
    pub version: u64,
    /// Rows changed (with their new totals) and the visitors added.
    pub batch: Batch,
}

/// The history store of one data directory.
pub struct Store {
    db: Database,
    origin: Origin,
}

impl Store {
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(StoreError::Directory)?;
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join(FILE_NAME))
            .map_err(|error| match error {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse,
                other => db_error(other),
            })?;
        let txn = db.begin_write().map_err(db_error)?;
        let origin = {
            let mut meta = txn.open_table(META).map_err(db_error)?;
            let found = meta.get("schema").map_err(db_error)?.map(|value| value.value());
            match found {
                Some(SCHEMA_VERSION) => {}
                Some(found) => return Err(StoreError::Schema { found }),
                None => {
                    meta.insert("schema", SCHEMA_VERSION).map_err(db_error)?;
                }
            }
            let existing = meta.get("origin").map_err(db_error)?.map(|value| value.value());
            match existing {
                Some(origin) => origin,
                None => {
                    let origin = rand::random();
                    meta.insert("origin", origin).map_err(db_error)?;
                    origin
                }
            }
        };
        txn.open_table(ROWS).map_err(db_error)?;
        txn.open_table(CHANGES).map_err(db_error)?;
        txn.open_table(HAVES).map_err(db_error)?;
        txn.open_table(SKETCHES).map_err(db_error)?;
        txn.commit().map_err(db_error)?;
        Ok(Self { db, origin })
    }

    /// This data directory's origin id.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Writes this node's tally as its next flush, in one transaction, and
    /// returns what to push to peers (none if the tally was empty). Days
    /// before `keep_from` are past retention and skipped.
    pub fn flush(&self, pending: &Pending, keep_from: Day) -> Result<Option<Flushed>, StoreError> {
        if pending.is_empty() {
            return Ok(None);
        }
        let txn = self.db.begin_write().map_err(db_error)?;
        let version = {
            let mut meta = txn.open_table(META).map_err(db_error)?;
            let last = meta.get("version").map_err(db_error)?.map_or(0, |value| value.value());
            let version = last.saturating_add(1);
            meta.insert("version", version).map_err(db_error)?;
            version
        };
        let mut batch = Batch::default();
        let mut writer = Writer::open(&txn)?;
        for entry in pending.topics.iter() {
            let ((day, topic), tally) = (entry.key().clone(), entry.value());
            if day < keep_from {
                continue;
            }
            let key = (day.number(), topic.as_str(), self.origin);
            let (_, views, peak) = writer
                .rows
                .get(key)
                .map_err(db_error)?
                .map_or((0, 0, 0), |value| value.value());
            let row = Row {
                origin: self.origin,
                day,
                topic: topic.clone(),
                version,
                views: views.saturating_add(tally.views),
                peak: peak.max(tally.peak),
            };
            writer.put_row(&row)?;
            if !tally.visitors.is_empty() {
                let part = SketchPart {
                    day,
                    scope: Scope::Topic,
                    name: topic.to_string(),
                    visitors: tally.visitors.clone(),
                };
                writer.merge_sketch(&part)?;
                batch.sketches.push(part);
            }
            batch.rows.push(row);
        }
        for ((day, site), visitors) in pending.sites() {
            if day < keep_from {
                continue;
            }
            let part = SketchPart {
                day,
                scope: Scope::Site,
                name: site,
                visitors,
            };
            writer.merge_sketch(&part)?;
            batch.sketches.push(part);
        }
        writer.haves.insert(self.origin, version).map_err(db_error)?;
        drop(writer);
        txn.commit().map_err(db_error)?;
        Ok(Some(Flushed { version, batch }))
    }

    /// Merges a batch from a peer in one transaction. `flushed` names the
    /// origin flush the batch is (for a push); the batch's own `haves` say
    /// what a pull answer covers. A have only advances when everything
    /// before it is held.
    pub fn apply(&self, batch: &Batch, flushed: Option<(Origin, u64)>, keep_from: Day) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let mut writer = Writer::open(&txn)?;
        for row in batch.rows.iter().filter(|row| row.day >= keep_from) {
            writer.merge_row(row)?;
        }
        for part in batch.sketches.iter().filter(|part| part.day >= keep_from) {
            writer.merge_sketch(part)?;
        }
        let mut advances: Vec<(Origin, u64, u64)> = batch
            .haves
            .iter()
            .map(|(&origin, &version)| (origin, 0, version))
            .collect();
        if let Some((origin, version)) = flushed {
            advances.push((origin, version.saturating_sub(1), version));
        }
        for (origin, needs, version) in advances {
            let have = writer
                .haves
                .get(origin)
                .map_err(db_error)?
                .map_or(0, |value| value.value());
            if have >= needs && version > have {
                writer.haves.insert(origin, version).map_err(db_error)?;
            }
        }
        drop(writer);
        self.never_reuse_versions(&txn, batch)?;
        txn.commit().map_err(db_error)
    }

    /// Peers may hold flushes of this origin that its store lacks (a store
    /// restored from an old copy): the next flush must number above them, or
    /// peers, who already claim those numbers, would never ask for it.
    fn never_reuse_versions(&self, txn: &WriteTransaction, batch: &Batch) -> Result<(), StoreError> {
        let seen = batch
            .rows
            .iter()
            .filter(|row| row.origin == self.origin)
            .map(|row| row.version)
            .chain(batch.haves.get(&self.origin).copied())
            .max()
            .unwrap_or(0);
        let mut meta = txn.open_table(META).map_err(db_error)?;
        let last = meta.get("version").map_err(db_error)?.map_or(0, |value| value.value());
        if seen > last {
            meta.insert("version", seen).map_err(db_error)?;
        }
        Ok(())
    }

    /// Up to which flush this store holds each origin.
    pub fn haves(&self) -> Result<HashMap<Origin, u64>, StoreError> {
        let txn = self.read()?;
        let haves = txn.open_table(HAVES).map_err(db_error)?;
        let mut out = HashMap::new();
        for entry in haves.iter().map_err(db_error)? {
            let (origin, version) = entry.map_err(db_error)?;
            out.insert(origin.value(), version.value());
        }
        Ok(out)
    }

    /// The rows a peer holding `theirs` lacks, with their sketches: at most
    /// about `max_rows` rows, cut between two flushes of an origin, and the
    /// haves the answer covers.
    pub fn changes_since(&self, theirs: &HashMap<Origin, u64>, max_rows: usize) -> Result<Batch, StoreError> {
        let ours = self.haves()?;
        let txn = self.read()?;
        let changes = txn.open_table(CHANGES).map_err(db_error)?;
        let rows = txn.open_table(ROWS).map_err(db_error)?;
        let mut batch = Batch::default();
        for (&origin, &have) in &ours {
            let since = theirs.get(&origin).copied().unwrap_or(0);
            if since >= have {
                continue;
            }
            let mut covered = have;
            let mut last_version = since;
            let start = (origin, since.saturating_add(1), i32::MIN, "");
            for entry in changes.range(start..).map_err(db_error)? {
                let (key, _) = entry.map_err(db_error)?;
                let (row_origin, version, day_number, topic) = key.value();
                if row_origin != origin {
                    break;
                }
                if batch.rows.len() >= max_rows && version != last_version {
                    covered = covered.min(last_version);
                    break;
                }
                last_version = version;
                let value = rows.get((day_number, topic, origin)).map_err(db_error)?;
                let (Some(day), Ok(topic), Some(value)) = (Day::from_number(day_number), Topic::new(topic), value)
                else {
                    continue;
                };
                let (version, views, peak) = value.value();
                batch.rows.push(Row {
                    origin,
                    day,
                    topic,
                    version,
                    views,
                    peak,
                });
            }
            batch.haves.insert(origin, covered);
        }
        batch.sketches = sketches_of(&txn, &batch.rows)?;
        Ok(batch)
    }

    /// A topic's totals for each day from `first` to `last` that has any.
    pub fn topic_days(&self, topic: &str, first: Day, last: Day) -> Result<BTreeMap<Day, DayTotals>, StoreError> {
        let txn = self.read()?;
        let rows = txn.open_table(ROWS).map_err(db_error)?;
        let sketches = txn.open_table(SKETCHES).map_err(db_error)?;
        let mut out = BTreeMap::new();
        for day in first.through(last) {
            let number = day.number();
            let mut totals = DayTotals::default();
            let mut any = false;
            for entry in rows
                .range((number, topic, 0)..=(number, topic, u64::MAX))
                .map_err(db_error)?
            {
                let (_, value) = entry.map_err(db_error)?;
                let (_, views, peak) = value.value();
                totals.views = totals.views.saturating_add(views);
                totals.peak = totals.peak.max(peak);
                any = true;
            }
            if let Some(bytes) = sketches.get((number, Scope::Topic.tag(), topic)).map_err(db_error)? {
                totals.visitors = Visitors::decode(bytes.value())?;
                any = true;
            }
            if any {
                out.insert(day, totals);
            }
        }
        Ok(out)
    }

    /// Totals of every topic under `prefix` on `day`.
    pub fn day_topics(&self, day: Day, prefix: &str) -> Result<BTreeMap<String, DayTotals>, StoreError> {
        let txn = self.read()?;
        let rows = txn.open_table(ROWS).map_err(db_error)?;
        let sketches = txn.open_table(SKETCHES).map_err(db_error)?;
        let number = day.number();
        let mut out: BTreeMap<String, DayTotals> = BTreeMap::new();
        for entry in rows.range((number, prefix, 0)..).map_err(db_error)? {
            let (key, value) = entry.map_err(db_error)?;
            let (row_day, topic, _) = key.value();
            if row_day != number || !topic.starts_with(prefix) {
                break;
            }
            let (_, views, peak) = value.value();
            let totals = out.entry(topic.to_owned()).or_default();
            totals.views = totals.views.saturating_add(views);
            totals.peak = totals.peak.max(peak);
        }
        for (topic, totals) in &mut out {
            if let Some(bytes) = sketches
                .get((number, Scope::Topic.tag(), topic.as_str()))
                .map_err(db_error)?
            {
                totals.visitors = Visitors::decode(bytes.value())?;
            }
        }
        Ok(out)
    }

    /// The visitors on `day` of one site, or of every site (none).
    pub fn site_visitors(&self, day: Day, site: Option<&str>) -> Result<Visitors, StoreError> {
        let txn = self.read()?;
        let sketches = txn.open_table(SKETCHES).map_err(db_error)?;
        let (number, tag) = (day.number(), Scope::Site.tag());
        let Some(site) = site else {
            let mut all = Vec::new();
            for entry in sketches.range((number, tag, "")..).map_err(db_error)? {
                let (key, bytes) = entry.map_err(db_error)?;
                let (entry_day, entry_tag, _) = key.value();
                if (entry_day, entry_tag) != (number, tag) {
                    break;
                }
                all.push(Visitors::decode(bytes.value())?);
            }
            return Ok(Visitors::union(&all));
        };
        match sketches.get((number, tag, site)).map_err(db_error)? {
            Some(bytes) => Ok(Visitors::decode(bytes.value())?),
            None => Ok(Visitors::new()),
        }
    }

    /// Deletes every day before `keep_from`; returns the rows deleted.
    pub fn prune(&self, keep_from: Day) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let pruned = {
            let mut rows = txn.open_table(ROWS).map_err(db_error)?;
            let mut changes = txn.open_table(CHANGES).map_err(db_error)?;
            let mut sketches = txn.open_table(SKETCHES).map_err(db_error)?;
            let end = (keep_from.number(), "", 0);
            let old: Vec<(i32, String, u64, u64)> = rows
                .range(..end)
                .map_err(db_error)?
                .map(|entry| {
                    let (key, value) = entry.map_err(db_error)?;
                    let (day, topic, origin) = key.value();
                    Ok((day, topic.to_owned(), origin, value.value().0))
                })
                .collect::<Result<_, StoreError>>()?;
            for (day, topic, origin, version) in &old {
                rows.remove((*day, topic.as_str(), *origin)).map_err(db_error)?;
                changes
                    .remove((*origin, *version, *day, topic.as_str()))
                    .map_err(db_error)?;
            }
            sketches
                .retain_in(..(keep_from.number(), 0, ""), |_, _| false)
                .map_err(db_error)?;
            u64::try_from(old.len()).unwrap_or(u64::MAX)
        };
        txn.commit().map_err(db_error)?;
        Ok(pruned)
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        self.db.begin_read().map_err(db_error)
    }
}

/// The sketches of the topics of `rows` and of their sites.
fn sketches_of(txn: &ReadTransaction, rows: &[Row]) -> Result<Vec<SketchPart>, StoreError> {
    let sketches = txn.open_table(SKETCHES).map_err(db_error)?;
    let wanted: BTreeSet<(Day, Scope, &str)> = rows
        .iter()
        .flat_map(|row| {
            [
                (row.day, Scope::Topic, row.topic.as_str()),
                (row.day, Scope::Site, site_of(&row.topic)),
            ]
        })
        .collect();
    let mut out = Vec::new();
    for (day, scope, name) in wanted {
        if let Some(bytes) = sketches.get((day.number(), scope.tag(), name)).map_err(db_error)? {
            out.push(SketchPart {
                day,
                scope,
                name: name.to_owned(),
                visitors: Visitors::decode(bytes.value())?,
            });
        }
    }
    Ok(out)
}

/// The tables one write transaction changes.
struct Writer<'txn> {
    rows: Table<'txn, (i32, &'static str, u64), (u64, u64, u64)>,
    changes: Table<'txn, (u64, u64, i32, &'static str), ()>,
    haves: Table<'txn, u64, u64>,
    sketches: Table<'txn, (i32, u8, &'static str), &'static [u8]>,
}

impl<'txn> Writer<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            rows: txn.open_table(ROWS).map_err(db_error)?,
            changes: txn.open_table(CHANGES).map_err(db_error)?,
            haves: txn.open_table(HAVES).map_err(db_error)?,
            sketches: txn.open_table(SKETCHES).map_err(db_error)?,
        })
    }

    /// Merges a row from anywhere by the row rule.
    fn merge_row(&mut self, row: &Row) -> Result<(), StoreError> {
        let key = (row.day.number(), row.topic.as_str(), row.origin);
        let stored: Option<RowValue> = self.rows.get(key).map_err(db_error)?.map(|value| value.value());
        let Some(merged) = merge_row(stored, (row.version, row.views, row.peak)) else {
            return Ok(());
        };
        self.write_row(row, stored.map(|value| value.0), merged)
    }

    /// Writes this node's own row as it is.
    fn put_row(&mut self, row: &Row) -> Result<(), StoreError> {
        let key = (row.day.number(), row.topic.as_str(), row.origin);
        let stored = self.rows.get(key).map_err(db_error)?.map(|value| value.value().0);
        self.write_row(row, stored, (row.version, row.views, row.peak))
    }

    fn write_row(&mut self, row: &Row, old_version: Option<u64>, value: RowValue) -> Result<(), StoreError> {
        let (day, topic) = (row.day.number(), row.topic.as_str());
        self.rows.insert((day, topic, row.origin), value).map_err(db_error)?;
        if old_version != Some(value.0) {
            if let Some(old) = old_version {
                self.changes.remove((row.origin, old, day, topic)).map_err(db_error)?;
            }
            self.changes
                .insert((row.origin, value.0, day, topic), ())
                .map_err(db_error)?;
        }
        Ok(())
    }

    fn merge_sketch(&mut self, part: &SketchPart) -> Result<(), StoreError> {
        let key = (part.day.number(), part.scope.tag(), part.name.as_str());
        let merged = match self.sketches.get(key).map_err(db_error)? {
            Some(bytes) => {
                let mut stored = Visitors::decode(bytes.value())?;
                stored.merge(&part.visitors);
                stored
            }
            None => part.visitors.clone(),
        };
        self.sketches
            .insert(key, merged.encode().as_slice())
            .map_err(db_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tally::TopicTally;

    fn day(text: &str) -> Day {
        Day::parse(text).expect("valid")
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    fn open(dir: &tempfile::TempDir) -> Store {
        Store::open(dir.path()).expect("open")
    }

    fn topic(name: &str) -> Topic {
        Topic::new(name).expect("valid")
    }

    const LONG_AGO: &str = "2000-01-01";

    /// A tally of `views` views of `name` on `on` by visitors `first..first + views`.
    fn pending(on: &str, name: &str, views: u64, first: u64) -> Pending {
        let pending = Pending::default();
        let mut tally = TopicTally {
            views,
            peak: views,
            ..Default::default()
        };
        for key in first..first + views {
            tally.visitors.insert(key);
        }
        pending.topics.insert((day(on), topic(name)), tally);
        pending
    }

    fn views(store: &Store, on: &str, name: &str) -> (u64, u64) {
        let days = store.topic_days(name, day(on), day(on)).expect("read");
        days.get(&day(on))
            .map_or((0, 0), |totals| (totals.views, totals.visitors.estimate()))
    }

    #[test]
    fn flushes_survive_a_reopen_under_the_same_origin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let origin = {
            let store = Store::open(dir.path()).expect("open");
            let first = store
                .flush(&pending("2026-11-30", "s/a", 3, 0), day(LONG_AGO))
                .expect("flush");
            assert_eq!(first.map(|flushed| flushed.version), Some(1));
            store
                .flush(&pending("2026-11-30", "s/a", 2, 10), day(LONG_AGO))
                .expect("flush");
            assert!(
                store
                    .flush(&Pending::default(), day(LONG_AGO))
                    .expect("flush")
                    .is_none(),
                "nothing to write"
            );
            store.origin()
        };
        let store = Store::open(dir.path()).expect("reopen");
        assert_eq!(store.origin(), origin);
        assert_eq!(views(&store, "2026-11-30", "s/a"), (5, 5));
        let next = store
            .flush(&pending("2026-11-30", "s/a", 1, 20), day(LONG_AGO))
            .expect("flush");
        assert_eq!(next.map(|flushed| flushed.version), Some(3), "versions continue");
    }

    #[test]
    fn pulls_carry_what_changed_and_nothing_twice() {
        let (dir_a, dir_b) = (tempdir(), tempdir());
        let (a, b) = (open(&dir_a), open(&dir_b));
        a.flush(&pending("2026-11-29", "s/old", 4, 0), day(LONG_AGO))
            .expect("flush");
        a.flush(&pending("2026-11-30", "s/new", 2, 100), day(LONG_AGO))
            .expect("flush");
        let all = a.changes_since(&b.haves().expect("haves"), 100).expect("changes");
        assert_eq!(all.rows.len(), 2);
        b.apply(&all, None, day(LONG_AGO)).expect("apply");
        assert_eq!(views(&b, "2026-11-29", "s/old"), (4, 4));
        assert_eq!(b.haves().expect("haves").get(&a.origin()), Some(&2));
        let again = a.changes_since(&b.haves().expect("haves"), 100).expect("changes");
        assert!(
            again.rows.is_empty() && again.sketches.is_empty(),
            "a quiet pull is empty"
        );

        a.flush(&pending("2026-11-30", "s/new", 1, 200), day(LONG_AGO))
            .expect("flush");
        let delta = a.changes_since(&b.haves().expect("haves"), 100).expect("changes");
        let changed: Vec<(&str, u64)> = delta.rows.iter().map(|row| (row.topic.as_str(), row.views)).collect();
        assert_eq!(changed, [("s/new", 3)], "only the row that changed, as its new total");
        b.apply(&delta, None, day(LONG_AGO)).expect("apply");
        b.apply(&delta, None, day(LONG_AGO)).expect("apply twice");
        assert_eq!(views(&b, "2026-11-30", "s/new"), (3, 3));
    }

    #[test]
    fn a_third_node_gets_an_origin_from_whoever_holds_it() {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
        let stores: Vec<Store> = dirs.iter().map(|dir| Store::open(dir.path()).expect("open")).collect();
        stores[0]
            .flush(&pending("2026-11-30", "s/a", 7, 0), day(LONG_AGO))
            .expect("flush");
        let to_b = stores[0].changes_since(&HashMap::new(), 100).expect("changes");
        stores[1].apply(&to_b, None, day(LONG_AGO)).expect("apply");
        drop(stores.into_iter().next());
        let stores: Vec<Store> = dirs[1..]
            .iter()
            .map(|dir| Store::open(dir.path()).expect("open"))
            .collect();
        let to_c = stores[0]
            .changes_since(&stores[1].haves().expect("haves"), 100)
            .expect("changes");
        stores[1].apply(&to_c, None, day(LONG_AGO)).expect("apply");
        assert_eq!(views(&stores[1], "2026-11-30", "s/a"), (7, 7), "A's views outlive A");
    }

    #[test]
    fn a_push_after_a_lost_one_does_not_claim_the_gap() {
        let (dir_a, dir_b) = (tempdir(), tempdir());
        let (a, b) = (open(&dir_a), open(&dir_b));
        let lost = a
            .flush(&pending("2026-11-30", "s/a", 1, 0), day(LONG_AGO))
            .expect("flush");
        let second = a
            .flush(&pending("2026-11-30", "s/b", 1, 1), day(LONG_AGO))
            .expect("flush")
            .expect("something flushed");
        b.apply(&second.batch, Some((a.origin(), second.version)), day(LONG_AGO))
            .expect("apply");
        assert_eq!(b.haves().expect("haves").get(&a.origin()), None, "flush 1 is missing");
        let repair = a.changes_since(&b.haves().expect("haves"), 100).expect("changes");
        assert_eq!(repair.rows.len(), 2);
        b.apply(&repair, None, day(LONG_AGO)).expect("apply");
        assert_eq!(b.haves().expect("haves").get(&a.origin()), Some(&2));
        assert!(lost.is_some());
    }

    #[test]
    fn answers_are_cut_between_flushes_and_resume() {
        let (dir_a, dir_b) = (tempdir(), tempdir());
        let (a, b) = (open(&dir_a), open(&dir_b));
        for flush in 0..5u64 {
            let many = Pending::default();
            for i in 0..3 {
                many.topics.insert(
                    (day("2026-11-30"), topic(&format!("s/{flush}-{i}"))),
                    TopicTally::default(),
                );
            }
            a.flush(&many, day(LONG_AGO)).expect("flush");
        }
        let mut rounds = 0;
        loop {
            let part = a.changes_since(&b.haves().expect("haves"), 4).expect("changes");
            if part.rows.is_empty() {
                break;
            }
            assert!(part.rows.len() <= 6, "cut at the first flush boundary past the budget");
            b.apply(&part, None, day(LONG_AGO)).expect("apply");
            rounds += 1;
        }
        assert_eq!(rounds, 3);
        assert_eq!(b.day_topics(day("2026-11-30"), "s/").expect("list").len(), 15);
    }

    #[test]
    fn pruning_drops_old_days_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        store
            .flush(&pending("2026-01-01", "s/a", 2, 0), day(LONG_AGO))
            .expect("flush");
        store
            .flush(&pending("2026-11-30", "s/a", 3, 0), day(LONG_AGO))
            .expect("flush");
        assert_eq!(store.prune(day("2026-06-01")).expect("prune"), 1);
        assert_eq!(views(&store, "2026-01-01", "s/a"), (0, 0));
        assert_eq!(views(&store, "2026-11-30", "s/a"), (3, 3));
        assert!(
            store
                .site_visitors(day("2026-01-01"), Some("s"))
                .expect("read")
                .is_empty(),
            "sketches of pruned days are gone"
        );
        let late = store
            .flush(&pending("2026-01-02", "s/a", 1, 0), day("2026-06-01"))
            .expect("flush");
        assert!(
            late.is_some_and(|flushed| flushed.batch.rows.is_empty()),
            "past retention is not written"
        );
    }

    #[test]
    fn a_store_restored_from_an_old_copy_numbers_past_what_peers_hold() {
        let (dir_a, dir_b) = (tempdir(), tempdir());
        let backup = tempfile::tempdir().expect("tempdir");
        let (a, b) = (open(&dir_a), open(&dir_b));
        a.flush(&pending("2026-11-30", "s/a", 1, 0), day(LONG_AGO))
            .expect("flush");
        drop(a);
        std::fs::copy(dir_a.path().join(FILE_NAME), backup.path().join(FILE_NAME)).expect("backup");
        let a = Store::open(dir_a.path()).expect("open");
        a.flush(&pending("2026-11-30", "s/a", 1, 1), day(LONG_AGO))
            .expect("flush");
        b.apply(
            &a.changes_since(&HashMap::new(), 100).expect("changes"),
            None,
            day(LONG_AGO),
        )
        .expect("apply");
        drop(a);
        let restored = Store::open(backup.path()).expect("open the old copy");
        restored
            .apply(
                &b.changes_since(&HashMap::new(), 100).expect("changes"),
                None,
                day(LONG_AGO),
            )
            .expect("apply");
        let next = restored
            .flush(&pending("2026-11-30", "s/b", 1, 2), day(LONG_AGO))
            .expect("flush")
            .expect("flushed");
        assert_eq!(next.version, 3, "above the 2 that b already holds");
        let to_b = restored
            .changes_since(&b.haves().expect("haves"), 100)
            .expect("changes");
        assert_eq!(to_b.rows.len(), 1, "b asks for, and gets, the new flush");
    }

    #[test]
    fn a_store_in_use_is_refused_with_a_hint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _open = Store::open(dir.path()).expect("open");
        let error = Store::open(dir.path()).err().expect("refused");
        assert!(matches!(error, StoreError::InUse));
        assert!(error.to_string().contains("--data-dir"), "{error}");
    }

    #[test]
    fn a_store_of_another_layout_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let db = Database::create(dir.path().join(FILE_NAME)).expect("create");
            let txn = db.begin_write().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert("schema", 99)
                .expect("insert");
            txn.commit().expect("commit");
        }
        assert!(matches!(Store::open(dir.path()), Err(StoreError::Schema { found: 99 })));
    }
}
