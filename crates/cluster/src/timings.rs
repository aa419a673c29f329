//! Every timing of the cluster protocol, in one type.
//!
//! [`Timings::DEFAULT`] is the contract's: X = 1 s, a suspect timeout of
//! 1.5 s, and the fixed timings below, chosen so that a crash is pruned
//! within 5 s and every node agrees within 2·X of the last change. An
//! operator sets X (`--gossip-interval`) and the suspect timeout; tests and
//! the simulation may set any of them. foca's configuration is built from
//! it ([`Timings::swim`]); `docs/protocol.md` explains each field.

use std::{
    num::{NonZeroU32, NonZeroUsize},
    time::Duration,
};

/// Members asked to probe a member that did not answer directly. foca's
/// LAN preset asks 3; with the short suspect timeout the 5 s contract
/// needs, the simulation under 10 % packet loss saw 9–17 members of 20
/// falsely declared down in a minute with 3, and 0–1 with 6 (crash
/// detection unchanged): an answer through any of 6 paths is likelier.
const INDIRECT_PROBES: usize = 6;

/// The timings a node's protocol core runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// X: how often changed counts are sent.
    pub gossip_interval: Duration,
    /// How long a suspected member may answer before it is declared down.
    pub suspect_timeout: Duration,
    /// How often SWIM probes a member. foca's LAN preset probes every
    /// second; in a small cluster a crashed node can then go unprobed for
    /// two periods, and detection measured 3.1–5.1 s against the 5 s
    /// contract. Half a second brings the worst case to about 3 s for
    /// ~300 B/s more probe traffic.
    pub probe_period: Duration,
    /// How long a probe waits for a direct answer before asking others.
    pub probe_rtt: Duration,
    /// A quiet node sends a digest at most this often, however short X is:
    /// a digest only refreshes liveness and reveals lost updates.
    pub digest_interval: Duration,
    /// How often seeds and recently down members are announced to, so a new
    /// node finds the cluster and the sides of a healed partition find each
    /// other.
    pub announce_interval: Duration,
    /// Announces to one down member back off up to this.
    pub announce_backoff_max: Duration,
    /// SWIM forgets a member this long after it was declared down. Until
    /// then its identity blocks any other at the same address that it
    /// outranks, such as the same node restarted with its clock set back
    /// (foca's default is a day).
    pub forget_down_after: Duration,
    /// Down members are listed in the view (and announced to) this long.
    pub list_down_for: Duration,
    /// A live member whose gossip has not been heard for this many rounds
    /// (at least; more in large clusters) is flagged stale.
    pub stale_after_rounds: u32,
    /// How long a pull may take in all.
    pub pull_timeout: Duration,
}

impl Timings {
    /// The contract's timings.
    pub const DEFAULT: Self = Self {
        gossip_interval: Duration::from_secs(1),
        suspect_timeout: Duration::from_millis(1500),
        probe_period: Duration::from_millis(500),
        probe_rtt: Duration::from_millis(200),
        digest_interval: Duration::from_secs(1),
        announce_interval: Duration::from_secs(1),
        announce_backoff_max: Duration::from_secs(60),
        forget_down_after: Duration::from_secs(15),
        list_down_for: Duration::from_secs(300),
        stale_after_rounds: 5,
        pull_timeout: Duration::from_secs(5),
    };

    /// foca's LAN preset with these probe timings and suspect timeout,
    /// [`INDIRECT_PROBES`], and packets of at most `max_packet` bytes.
    pub fn swim(&self, max_packet: usize) -> foca::Config {
        let mut config = foca::Config::new_lan(NonZeroU32::new(32).unwrap_or(NonZeroU32::MIN));
        config.probe_period = self.probe_period;
        config.probe_rtt = self.probe_rtt;
        config.num_indirect_probes = NonZeroUsize::new(INDIRECT_PROBES).unwrap_or(NonZeroUsize::MIN);
        config.suspect_to_down_after = self.suspect_timeout;
        config.remove_down_after = Some(self.forget_down_after);
        config.max_packet_size = NonZeroUsize::new(max_packet).unwrap_or(NonZeroUsize::MIN);
        config
    }

    /// How long a live member of a cluster of `live` others may stay
    /// unheard before it is flagged stale: [`Self::stale_after_rounds`]
    /// rounds, more in large clusters (where a member's digest reaches
    /// everyone later), of X or the digest interval, whichever is longer.
    pub fn stale_after(&self, live: usize) -> Duration {
        let rounds = self
            .stale_after_rounds
            .max(u32::try_from(2 * live / 3).unwrap_or(u32::MAX));
        self.gossip_interval.max(self.digest_interval) * rounds
    }
}

impl Default for Timings {
    fn default() -> Self {
        Self::DEFAULT
    }
}
