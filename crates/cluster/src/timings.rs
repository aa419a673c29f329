//! Every fixed timing of the cluster protocol, in one place.
//!
//! The two an operator sets (`--gossip-interval`, X, and
//! `--suspect-timeout`) come in through [`crate::ClusterConfig`]; these are
//! the rest. `docs/protocol.md` explains each against the contract: a crash
//! pruned within 5 s, agreement within 2·X of the last change.

use std::time::Duration;

/// How often SWIM probes a member. foca's LAN preset probes every second; in
/// a small cluster a crashed node can then go unprobed for two periods, and
/// detection measured 3.1–5.1 s against the 5 s contract. Half a second
/// brings the worst case to about 3 s for ~300 B/s more probe traffic.
pub const PROBE_PERIOD: Duration = Duration::from_millis(500);
/// How long a probe waits for a direct answer before asking others.
pub const PROBE_RTT: Duration = Duration::from_millis(200);
/// A quiet node sends a digest at most this often, however short X is: a
/// digest only refreshes liveness and reveals lost updates.
pub const DIGEST_INTERVAL: Duration = Duration::from_secs(1);
/// How often seeds and recently down members are announced to, so a new
/// node finds the cluster and the sides of a healed partition find each other.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
/// Announces to one down member back off up to this.
pub const ANNOUNCE_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// SWIM forgets a member this long after it was declared down. Until then
/// its identity blocks any other at the same address that it outranks, such
/// as the same node restarted with its clock set back (foca's default is a
/// day).
pub const FORGET_DOWN_AFTER: Duration = Duration::from_secs(15);
/// Down members are listed in the view (and announced to) this long.
pub const LIST_DOWN_FOR: Duration = Duration::from_secs(300);
/// A live member whose gossip has not been heard for this many rounds (at
/// least; more in large clusters) is flagged stale.
pub const STALE_AFTER_ROUNDS: u32 = 5;
/// How long a full-state pull may take to connect.
pub const PULL_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a full-state pull may take in all.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(5);
/// How far a sender's clock may be from ours, both ways, before its
/// envelopes are refused as replays.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(10);
