//! Sealing and opening every message between nodes.
//!
//! A gossip datagram or a sync message is an [`Envelope`]: kind, sender
//! timestamp, body and, with a cluster secret, an HMAC-SHA256 over all three.
//! Opening checks, in order: size, shape, kind, MAC presence and value, and
//! that the timestamp lies within the replay window, so a captured packet
//! cannot be played back later. Every refusal names a [`DropReason`], which
//! the caller counts in metrics; nothing here panics or allocates beyond the
//! input's size.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use headcount_proto::cluster::{Envelope, Kind};
use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;

/// How far a sender's clock may be from ours, both ways, before its
/// envelopes are refused as replays.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(10);

type HmacSha256 = Hmac<Sha256>;

/// Why an incoming message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    /// Larger than any message a node sends.
    #[error("oversized")]
    Oversized,
    /// Not an envelope, or a body that does not decode.
    #[error("malformed")]
    Malformed,
    /// An envelope of another kind than the channel carries.
    #[error("wrong kind")]
    WrongKind,
    /// A cluster secret is set and the envelope carries no MAC.
    #[error("unauthenticated")]
    Unauthenticated,
    /// The MAC does not match: another secret, or a forged or altered message.
    #[error("bad mac")]
    BadMac,
    /// The envelope carries a MAC but this node has no secret to check it.
    #[error("unexpected mac")]
    UnexpectedMac,
    /// The timestamp is outside the replay window.
    #[error("stale")]
    Stale,
}

impl DropReason {
    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::Malformed => "malformed",
            Self::WrongKind => "wrong_kind",
            Self::Unauthenticated => "unauthenticated",
            Self::BadMac => "bad_mac",
            Self::UnexpectedMac => "unexpected_mac",
            Self::Stale => "stale",
        }
    }
}

/// Shortest cluster secret accepted, in bytes: shorter keys can be guessed.
pub const MIN_SECRET_BYTES: usize = 16;

/// The shared key of a cluster. Its `Debug` never shows the key, so it cannot
/// leak through a logged configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Vec<u8>);

/// Why a key cannot be a cluster secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be at least {MIN_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)")]
pub struct SecretTooShort;

impl ClusterSecret {
    /// Checks that `key` is long enough.
    pub fn new(key: Vec<u8>) -> Result<Self, SecretTooShort> {
        if key.len() < MIN_SECRET_BYTES {
            return Err(SecretTooShort);
        }
        Ok(Self(key))
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

/// Seals and opens envelopes, with or without a cluster secret.
#[derive(Clone)]
pub struct Sealer {
    key: Option<HmacSha256>,
    max_len: usize,
}

impl Sealer {
    /// `secret` is the shared cluster key (none: no authentication);
    /// `max_len` bounds the encoded size of an envelope that is accepted.
    pub fn new(secret: Option<&[u8]>, max_len: usize) -> Self {
        let key = secret.map(|secret| {
            HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
        });
        Self { key, max_len }
    }

    /// Encodes `body` as an envelope of `kind`, stamped with the current time.
    pub fn seal(&self, kind: Kind, body: Vec<u8>) -> Vec<u8> {
        self.seal_envelope(kind, body).encode_to_vec()
    }

    /// Wraps `body` in an envelope of `kind`, stamped with the current time.
    pub fn seal_envelope(&self, kind: Kind, body: Vec<u8>) -> Envelope {
        self.seal_at(kind, body, now_ms())
    }

    fn seal_at(&self, kind: Kind, body: Vec<u8>, timestamp_ms: u64) -> Envelope {
        let mac = self.mac(kind, timestamp_ms, &body).unwrap_or_default();
        Envelope {
            kind: kind.into(),
            timestamp_ms,
            body,
            mac,
        }
    }

    /// Checks an encoded envelope of at most `max_len` bytes and returns its body.
    pub fn open(&self, expected: Kind, bytes: &[u8]) -> Result<Vec<u8>, DropReason> {
        self.open_at(expected, bytes, now_ms())
    }

    /// Opens a datagram of the gossip port: a SWIM packet or a count update.
    pub fn open_datagram(&self, bytes: &[u8]) -> Result<(Kind, Vec<u8>), DropReason> {
        self.open_datagram_at(bytes, now_ms())
    }

    fn open_datagram_at(&self, bytes: &[u8], now_ms: u64) -> Result<(Kind, Vec<u8>), DropReason> {
        if bytes.len() > self.max_len {
            return Err(DropReason::Oversized);
        }
        let envelope = Envelope::decode(bytes).map_err(|_| DropReason::Malformed)?;
        let kind = match Kind::try_from(envelope.kind) {
            Ok(kind @ (Kind::Gossip | Kind::Counts)) => kind,
            _ => return Err(DropReason::WrongKind),
        };
        self.check(kind, envelope, now_ms).map(|body| (kind, body))
    }

    /// Checks a decoded envelope and returns its body.
    pub fn open_envelope(&self, expected: Kind, envelope: Envelope) -> Result<Vec<u8>, DropReason> {
        self.check(expected, envelope, now_ms())
    }

    fn open_at(&self, expected: Kind, bytes: &[u8], now_ms: u64) -> Result<Vec<u8>, DropReason> {
        if bytes.len() > self.max_len {
            return Err(DropReason::Oversized);
        }
        let envelope = Envelope::decode(bytes).map_err(|_| DropReason::Malformed)?;
        self.check(expected, envelope, now_ms)
    }

    fn check(&self, expected: Kind, envelope: Envelope, now_ms: u64) -> Result<Vec<u8>, DropReason> {
        if envelope.kind != i32::from(expected) {
            return Err(DropReason::WrongKind);
        }
        match (&self.key, envelope.mac.is_empty()) {
            (None, true) => {}
            (None, false) => return Err(DropReason::UnexpectedMac),
            (Some(_), true) => return Err(DropReason::Unauthenticated),
            (Some(key), false) => {
                let mut mac = key.clone();
                feed(&mut mac, expected, envelope.timestamp_ms, &envelope.body);
                mac.verify_slice(&envelope.mac).map_err(|_| DropReason::BadMac)?;
            }
        }
        let window = u64::try_from(REPLAY_WINDOW.as_millis()).unwrap_or(u64::MAX);
        if envelope.timestamp_ms.abs_diff(now_ms) > window {
            return Err(DropReason::Stale);
        }
        Ok(envelope.body)
    }

    fn mac(&self, kind: Kind, timestamp_ms: u64, body: &[u8]) -> Option<Vec<u8>> {
        let mut mac = self.key.clone()?;
        feed(&mut mac, kind, timestamp_ms, body);
        Some(mac.finalize().into_bytes().to_vec())
    }
}

fn feed(mac: &mut HmacSha256, kind: Kind, timestamp_ms: u64, body: &[u8]) {
    mac.update(b"headcount.cluster.v1");
    mac.update(&i32::from(kind).to_be_bytes());
    mac.update(&timestamp_ms.to_be_bytes());
    mac.update(body);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000_000;

    fn open(sealer: &Sealer, bytes: &[u8]) -> Result<Vec<u8>, DropReason> {
        sealer.open_at(Kind::Gossip, bytes, NOW)
    }

    #[test]
    fn short_secrets_are_refused_and_none_is_ever_printed() {
        assert_eq!(ClusterSecret::new(b"k".to_vec()), Err(SecretTooShort));
        assert_eq!(ClusterSecret::new(vec![b'k'; 15]), Err(SecretTooShort));
        let secret = ClusterSecret::new(b"a-long-enough-secret".to_vec()).expect("16 bytes or more");
        assert!(!format!("{secret:?}").contains("long-enough"));
    }

    #[test]
    fn the_gossip_port_takes_swim_packets_and_count_updates_only() {
        let sealer = Sealer::new(Some(b"a-long-enough-secret"), 2048);
        for kind in [Kind::Gossip, Kind::Counts] {
            let sealed = sealer.seal_at(kind, b"x".to_vec(), NOW).encode_to_vec();
            assert_eq!(sealer.open_datagram_at(&sealed, NOW), Ok((kind, b"x".to_vec())));
        }
        let pull = sealer.seal_at(Kind::PullRequest, b"x".to_vec(), NOW).encode_to_vec();
        assert_eq!(sealer.open_datagram_at(&pull, NOW), Err(DropReason::WrongKind));
    }

    #[test]
    fn same_secret_round_trips() {
        let sealer = Sealer::new(Some(b"s3cret"), 2048);
        let sealed = sealer.seal_at(Kind::Gossip, b"hello".to_vec(), NOW).encode_to_vec();
        assert_eq!(open(&sealer, &sealed), Ok(b"hello".to_vec()));
    }

    #[test]
    fn no_secret_round_trips() {
        let sealer = Sealer::new(None, 2048);
        let sealed = sealer.seal_at(Kind::Gossip, b"hello".to_vec(), NOW).encode_to_vec();
        assert_eq!(open(&sealer, &sealed), Ok(b"hello".to_vec()));
    }

    #[test]
    fn another_secret_or_none_is_refused_both_ways() {
        let ours = Sealer::new(Some(b"ours"), 2048);
        let theirs = Sealer::new(Some(b"theirs"), 2048);
        let none = Sealer::new(None, 2048);
        let body = b"x".to_vec();
        assert_eq!(
            open(&ours, &theirs.seal_at(Kind::Gossip, body.clone(), NOW).encode_to_vec()),
            Err(DropReason::BadMac)
        );
        assert_eq!(
            open(&ours, &none.seal_at(Kind::Gossip, body.clone(), NOW).encode_to_vec()),
            Err(DropReason::Unauthenticated)
        );
        assert_eq!(
            open(&none, &ours.seal_at(Kind::Gossip, body, NOW).encode_to_vec()),
            Err(DropReason::UnexpectedMac)
        );
    }

    #[test]
    fn altered_body_kind_or_time_is_refused() {
        let sealer = Sealer::new(Some(b"k"), 2048);
        let sealed = sealer.seal_at(Kind::PullRequest, b"body".to_vec(), NOW).encode_to_vec();
        let mut envelope = Envelope::decode(sealed.as_slice()).expect("decodes");
        envelope.body = b"bodY".to_vec();
        assert_eq!(
            sealer.open_at(Kind::PullRequest, &envelope.encode_to_vec(), NOW),
            Err(DropReason::BadMac)
        );
        let mut envelope = Envelope::decode(sealed.as_slice()).expect("decodes");
        envelope.timestamp_ms += 1;
        assert_eq!(
            sealer.open_at(Kind::PullRequest, &envelope.encode_to_vec(), NOW),
            Err(DropReason::BadMac)
        );
        let mut envelope = Envelope::decode(sealed.as_slice()).expect("decodes");
        envelope.kind = Kind::PullResponse.into();
        assert_eq!(
            sealer.open_at(Kind::PullResponse, &envelope.encode_to_vec(), NOW),
            Err(DropReason::BadMac)
        );
        assert_eq!(sealer.open_at(Kind::Gossip, &sealed, NOW), Err(DropReason::WrongKind));
    }

    #[test]
    fn replays_outside_the_window_are_refused() {
        let sealer = Sealer::new(Some(b"k"), 2048);
        let sealed = sealer.seal_at(Kind::Gossip, b"x".to_vec(), NOW).encode_to_vec();
        let window = REPLAY_WINDOW.as_millis() as u64;
        assert!(sealer.open_at(Kind::Gossip, &sealed, NOW + window).is_ok());
        assert_eq!(
            sealer.open_at(Kind::Gossip, &sealed, NOW + window + 1),
            Err(DropReason::Stale)
        );
        assert_eq!(
            sealer.open_at(Kind::Gossip, &sealed, NOW - window - 1),
            Err(DropReason::Stale)
        );
    }

    #[test]
    fn oversized_input_is_refused_before_decoding() {
        let sealer = Sealer::new(None, 100);
        assert_eq!(open(&sealer, &[0u8; 101]), Err(DropReason::Oversized));
    }

    proptest! {
        #[test]
        fn garbage_never_opens_with_a_secret(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let sealer = Sealer::new(Some(b"k"), 2048);
            prop_assert!(open(&sealer, &bytes).is_err());
        }
    }
}
