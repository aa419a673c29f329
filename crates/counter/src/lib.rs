//! Local presence counting for one headcount node.
//!
//! A connection becomes a [`Presence`] on a [`Topic`] in a [`CounterTable`];
//! dropping the presence uncounts it. The table is striped over shards so that
//! joins and leaves on one hot topic never contend on one atomic, lock or task,
//! and it remembers which topics changed so the cluster layer can send only
//! those. Nothing here does IO.

mod table;
mod topic;

pub use table::{CounterTable, JoinError, Presence};
pub use topic::{MAX_TOPIC_BYTES, Topic, TopicError};
