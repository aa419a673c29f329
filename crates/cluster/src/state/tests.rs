//! The merge rules, one behaviour a test, and their properties.

use super::*;
use proptest::prelude::*;
use std::collections::HashSet;

fn topic(name: &str) -> Topic {
    Topic::new(name).expect("valid")
}

fn update(seq: u64, counts: &[(&str, u64)]) -> Update {
    Update {
        name: "b".into(),
        incarnation: 1,
        seq,
        round: seq,
        counts: counts.iter().map(|(t, c)| (topic(t), *c)).collect(),
    }
}

fn live() -> (ClusterState, Instant) {
    let now = Instant::now();
    let mut state = ClusterState::default();
    assert!(state.member_up("b", 1, now));
    (state, now)
}

fn full(seq: u64, counts: &[(&str, u64, u64)]) -> FullState {
    FullState {
        name: "b".into(),
        incarnation: 1,
        seq,
        counts: counts.iter().map(|(t, c, v)| (topic(t), *c, *v)).collect(),
        delta_since: None,
    }
}

fn delta(since: u64, seq: u64, counts: &[(&str, u64, u64)]) -> FullState {
    FullState {
        delta_since: Some(since),
        ..full(seq, counts)
    }
}

fn limited(max_count: u64, max_topics: usize) -> (ClusterState, Instant) {
    let now = Instant::now();
    let mut state = ClusterState::new(PeerLimits { max_count, max_topics });
    assert!(state.member_up("b", 1, now));
    (state, now)
}

#[test]
fn a_count_above_the_limit_is_refused_whole() {
    let (mut state, now) = limited(10, 100);
    let lie = update(1, &[("a", 3), ("b", 11)]);
    assert_eq!(state.apply_update(&lie, now), Outcome::Refused(Refusal::CountTooHigh));
    assert_eq!((state.count("a"), state.count("b")), (0, 0));
    assert!(
        !state.node("b", 1).expect("member").gap,
        "a refused update announces nothing"
    );
    let lie = full(1, &[("a", u64::MAX, 1)]);
    assert_eq!(
        state.apply_full_state(&lie, now),
        Outcome::Refused(Refusal::CountTooHigh)
    );
    assert_eq!(state.count("a"), 0);
}

#[test]
fn more_topics_than_the_limit_are_refused_whole() {
    let (mut state, now) = limited(10, 2);
    assert_eq!(
        state.apply_update(&update(1, &[("a", 1), ("b", 1)]), now),
        Outcome::Changed
    );
    assert_eq!(
        state.apply_update(&update(2, &[("a", 2), ("c", 1)]), now),
        Outcome::Refused(Refusal::TooManyTopics)
    );
    assert_eq!((state.count("a"), state.count("c")), (1, 0));
    assert_eq!(
        state.apply_update(&update(2, &[("a", 0), ("c", 1)]), now),
        Outcome::Changed,
        "a topic that leaves makes room"
    );
    let lie = full(3, &[("a", 1, 1), ("b", 1, 1), ("c", 1, 3)]);
    assert_eq!(
        state.apply_full_state(&lie, now),
        Outcome::Refused(Refusal::TooManyTopics)
    );
}

#[test]
fn a_forged_seq_far_ahead_neither_pins_a_topic_nor_holds_a_gap_open() {
    let (mut state, now) = live();
    // Before the owner's state is known, a forged digest opens a gap...
    let forged = update(1 << 62, &[]);
    assert_eq!(state.apply_update(&forged, now), Outcome::Unchanged);
    assert!(state.node("b", 1).expect("member").gap);
    // ...which the owner's full state closes for good.
    assert_eq!(state.apply_full_state(&full(3, &[("t", 1, 3)]), now), Outcome::Changed);
    assert!(!state.node("b", 1).expect("member").gap);
    let pin = update(1 << 62, &[("t", 999)]);
    assert_eq!(state.apply_update(&pin, now), Outcome::Refused(Refusal::SeqTooFarAhead));
    assert_eq!(state.count("t"), 1);
    assert!(!state.node("b", 1).expect("member").gap);
    assert_eq!(state.apply_update(&update(4, &[("t", 0)]), now), Outcome::Changed);
    assert_eq!(state.count("t"), 0, "the owner's next update still applies");
}

#[test]
fn sums_saturate_instead_of_wrapping() {
    let now = Instant::now();
    let mut state = ClusterState::new(PeerLimits {
        max_count: u64::MAX,
        max_topics: 10,
    });
    for name in ["b", "c"] {
        assert!(state.member_up(name, 1, now));
        let mut big = update(1, &[("t", u64::MAX - 1)]);
        big.name = name.into();
        state.apply_update(&big, now);
    }
    assert_eq!(state.count("t"), u64::MAX);
}

#[test]
fn updates_from_non_members_change_nothing() {
    let mut state = ClusterState::default();
    assert_eq!(
        state.apply_update(&update(1, &[("a", 5)]), Instant::now()),
        Outcome::NotMember
    );
    assert_eq!(state.count("a"), 0);
}

#[test]
fn in_order_updates_set_absolute_counts() {
    let (mut state, now) = live();
    assert_eq!(
        state.apply_update(&update(1, &[("a", 5), ("b", 1)]), now),
        Outcome::Changed
    );
    assert_eq!(state.apply_update(&update(2, &[("a", 3)]), now), Outcome::Changed);
    assert_eq!((state.count("a"), state.count("b")), (3, 1));
    let node = state.node("b", 1).expect("known");
    assert_eq!((node.connections, node.topics, node.gap), (4, 2, false));
}

#[test]
fn stale_and_duplicate_updates_change_nothing() {
    let (mut state, now) = live();
    state.apply_update(&update(1, &[("a", 5)]), now);
    state.apply_update(&update(2, &[("a", 7)]), now);
    assert_eq!(state.apply_update(&update(1, &[("a", 5)]), now), Outcome::Stale);
    assert_eq!(state.apply_update(&update(2, &[("a", 7)]), now), Outcome::Stale);
    assert_eq!(state.count("a"), 7);
}

#[test]
fn a_digest_ahead_of_the_watermark_opens_a_gap_and_full_state_closes_it() {
    let (mut state, now) = live();
    state.apply_update(&update(1, &[("a", 5)]), now);
    assert_eq!(state.apply_update(&update(4, &[]), now), Outcome::Unchanged);
    assert_eq!(state.gaps().collect::<Vec<_>>(), vec![&NodeKey::new("b", 1)]);
    let full = FullState {
        name: "b".into(),
        incarnation: 1,
        seq: 4,
        counts: vec![(topic("c"), 2, 3)],
        delta_since: None,
    };
    assert_eq!(state.apply_full_state(&full, now), Outcome::Changed);
    assert_eq!(
        (state.count("a"), state.count("c")),
        (0, 2),
        "a is absent at seq 4, so zero"
    );
    assert_eq!(state.gaps().count(), 0);
    assert_eq!(state.apply_update(&update(3, &[("a", 9)]), now), Outcome::Stale);
}

#[test]
fn a_delta_sets_what_it_holds_and_leaves_the_rest() {
    let (mut state, now) = live();
    state.apply_update(&update(1, &[("a", 5), ("b", 1)]), now);
    state.apply_update(&update(4, &[]), now);
    let repair = delta(1, 4, &[("a", 0, 3), ("c", 2, 2)]);
    assert_eq!(state.apply_full_state(&repair, now), Outcome::Changed);
    assert_eq!(
        (state.count("a"), state.count("b"), state.count("c")),
        (0, 1, 2),
        "a dropped to 0, b unchanged since 1 stays, c is new"
    );
    assert_eq!(state.gaps().count(), 0);
    assert_eq!(state.node("b", 1).map(|node| node.watermark), Some(4));
}

#[test]
fn a_delta_from_beyond_the_watermark_is_not_applied() {
    let (mut state, now) = live();
    state.apply_update(&update(1, &[("a", 5)]), now);
    state.apply_update(&update(5, &[]), now);
    assert_eq!(
        state.apply_full_state(&delta(3, 5, &[("c", 2, 4)]), now),
        Outcome::Stale
    );
    assert_eq!(state.count("c"), 0, "updates 2 and 3 would be missing");
    assert_eq!(state.gaps().count(), 1, "the gap stays open for a pull that fits");
}

#[test]
fn a_delta_may_carry_more_zeros_than_the_topic_limit() {
    let (mut state, now) = limited(10, 2);
    state.apply_update(&update(1, &[("a", 1)]), now);
    let zeros = delta(1, 2, &[("x", 0, 2), ("y", 0, 2), ("z", 0, 2), ("a", 2, 2)]);
    assert_eq!(state.apply_full_state(&zeros, now), Outcome::Changed);
    let too_many = delta(2, 3, &[("x", 1, 3), ("y", 1, 3), ("z", 1, 3)]);
    assert_eq!(
        state.apply_full_state(&too_many, now),
        Outcome::Refused(Refusal::TooManyTopics)
    );
}

#[test]
fn an_old_full_state_does_not_undo_newer_updates() {
    let (mut state, now) = live();
    state.apply_update(&update(1, &[("a", 5)]), now);
    state.apply_update(&update(3, &[("a", 8), ("z", 1)]), now);
    let full = FullState {
        name: "b".into(),
        incarnation: 1,
        seq: 2,
        counts: vec![(topic("a"), 6, 2)],
        delta_since: None,
    };
    state.apply_full_state(&full, now);
    assert_eq!((state.count("a"), state.count("z")), (8, 1));
    assert_eq!(state.gaps().count(), 0, "1, 2 (full state) and 3 are contiguous");
}

#[test]
fn member_down_drops_the_nodes_share_only() {
    let now = Instant::now();
    let mut state = ClusterState::default();
    state.member_up("b", 1, now);
    state.member_up("c", 1, now);
    state.apply_update(&update(1, &[("a", 5)]), now);
    state.apply_update(
        &Update {
            name: "c".into(),
            ..update(1, &[("a", 2)])
        },
        now,
    );
    assert_eq!(state.count("a"), 7);
    assert!(state.member_down("b", 1));
    assert_eq!(state.count("a"), 2);
    assert_eq!(state.apply_update(&update(2, &[("a", 9)]), now), Outcome::NotMember);
}

#[test]
fn a_new_incarnation_replaces_the_old_counts_at_once() {
    let (mut state, now) = live();
    state.apply_update(&update(1, &[("a", 5)]), now);
    assert!(state.member_up("b", 2, now), "a new incarnation is new");
    assert_eq!(state.count("a"), 0);
    assert!(
        !state.member_up("b", 1, now),
        "an incarnation already known is not pulled again"
    );
    let mut newer = update(1, &[("a", 2)]);
    newer.incarnation = 2;
    assert_eq!(state.apply_update(&newer, now), Outcome::Changed);
    state.member_down("b", 1);
    assert_eq!(state.count("a"), 2, "down of the old incarnation keeps the new one");
    assert_eq!(state.apply_update(&update(2, &[("a", 5)]), now), Outcome::NotMember);
    assert_eq!(state.nodes(), 1);
}

fn from(incarnation: u64, seq: u64, round: u64, counts: &[(&str, u64)]) -> Update {
    Update {
        incarnation,
        round,
        ..update(seq, counts)
    }
}

#[test]
fn two_live_nodes_with_one_name_are_both_counted() {
    let (mut state, now) = live();
    assert_eq!(state.apply_update(&from(1, 1, 10, &[("a", 5)]), now), Outcome::Changed);
    assert!(state.member_up("b", 2, now));
    assert_eq!(state.apply_update(&from(2, 1, 1, &[("a", 3)]), now), Outcome::Changed);
    assert_eq!(state.count("a"), 3, "the older one is out at once, as after a restart");
    // A datagram the older one sent before it was superseded changes nothing.
    state.apply_update(&from(1, 1, 11, &[]), now);
    assert_eq!(state.count("a"), 3);
    assert!(!state.duplicate(&NodeKey::new("b", 1)));
    // But rounds well past that prove it is alive: a second node.
    assert_eq!(state.apply_update(&from(1, 1, 12, &[]), now), Outcome::Changed);
    assert_eq!(state.count("a"), 8, "both nodes' visitors are counted");
    assert!(state.duplicate(&NodeKey::new("b", 1)) && state.duplicate(&NodeKey::new("b", 2)));
    assert_eq!(state.nodes(), 2);
    state.member_down("b", 2);
    assert_eq!(state.count("a"), 5);
}

/// One node's history: each step sets some topics; returns the updates
/// and the true final counts.
fn history() -> impl Strategy<Value = (Vec<Update>, HashMap<Topic, u64>)> {
    proptest::collection::vec(proptest::collection::vec((0u8..5, 0u64..4), 1..4), 1..12).prop_map(|steps| {
        let mut truth = HashMap::new();
        let updates = steps
            .into_iter()
            .enumerate()
            .map(|(i, sets)| {
                let counts: Vec<(Topic, u64)> = sets
                    .into_iter()
                    .map(|(t, c)| (topic(&format!("t{t}")), c))
                    .collect::<HashMap<_, _>>()
                    .into_iter()
                    .collect();
                for (t, c) in &counts {
                    truth.insert(t.clone(), *c);
                }
                update(
                    i as u64 + 1,
                    &counts.iter().map(|(t, c)| (t.as_str(), *c)).collect::<Vec<_>>(),
                )
            })
            .collect();
        truth.retain(|_, c| *c > 0);
        (updates, truth)
    })
}

/// Each topic's last (count, seq) among `updates` with a seq above `since`:
/// what a sender's state (or delta from `since`) holds of them.
fn set_after(updates: &[Update], since: u64) -> HashMap<Topic, (u64, u64)> {
    let mut set = HashMap::new();
    for u in updates.iter().filter(|u| u.seq > since) {
        for (t, c) in &u.counts {
            set.insert(t.clone(), (*c, u.seq));
        }
    }
    set
}

fn totals_of(state: &ClusterState) -> HashMap<Topic, u64> {
    state.totals().into_iter().collect()
}

proptest! {
    #[test]
    fn any_order_and_duplication_gives_the_same_view(
        (updates, truth) in history(),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let (mut state, now) = live();
        // Random picks (with repeats) first, then everything once in
        // reverse: every update arrives at least once, in a scrambled order.
        for pick in &order {
            state.apply_update(&updates[pick.index(updates.len())], now);
        }
        for u in updates.iter().rev() {
            state.apply_update(u, now);
        }
        prop_assert_eq!(totals_of(&state), truth);
        prop_assert_eq!(state.gaps().count(), 0);
    }

    #[test]
    fn a_full_state_at_any_point_converges_to_the_same_view(
        (updates, truth) in history(),
        cut in any::<prop::sample::Index>(),
        skip in any::<prop::sample::Index>(),
    ) {
        // The full state as of update `cut`, built from the history.
        let cut = cut.index(updates.len()) + 1;
        let at_cut = set_after(&updates[..cut], 0);
        let full = FullState {
            name: "b".into(),
            incarnation: 1,
            seq: cut as u64,
            counts: at_cut.into_iter().filter(|(_, (c, _))| *c > 0).map(|(t, (c, v))| (t, c, v)).collect(),
            delta_since: None,
        };
        let (mut state, now) = live();
        let skipped = skip.index(updates.len());
        for (i, u) in updates.iter().enumerate() {
            if i != skipped {
                state.apply_update(u, now);
            }
        }
        state.apply_full_state(&full, now);
        // A lost update after the cut is still missing; deliver it late.
        state.apply_update(&updates[skipped], now);
        prop_assert_eq!(totals_of(&state), truth);
    }

    #[test]
    fn a_delta_from_the_watermark_converges_to_the_same_view(
        (updates, truth) in history(),
        cut in any::<prop::sample::Index>(),
        lost in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        // The receiver lost some updates before `cut`; a delta from its
        // watermark to `cut` (zeros included, as the sender keeps them),
        // then the updates after `cut`, must give the truth.
        let cut = cut.index(updates.len()) + 1;
        let lost: HashSet<usize> = lost.iter().map(|index| index.index(cut)).collect();
        let (mut state, now) = live();
        for (i, u) in updates[..cut].iter().enumerate() {
            if !lost.contains(&i) {
                state.apply_update(u, now);
            }
        }
        let since = state.node("b", 1).map_or(0, |node| node.watermark);
        let changed = set_after(&updates[..cut], since);
        let repair = FullState {
            name: "b".into(),
            incarnation: 1,
            seq: cut as u64,
            counts: changed.into_iter().map(|(t, (c, v))| (t, c, v)).collect(),
            delta_since: Some(since),
        };
        prop_assert_ne!(state.apply_full_state(&repair, now), Outcome::Stale);
        for u in &updates[cut..] {
            state.apply_update(u, now);
        }
        prop_assert_eq!(totals_of(&state), truth);
        prop_assert_eq!(state.gaps().count(), 0);
    }

    #[test]
    fn stale_updates_change_nothing((updates, truth) in history()) {
        let (mut state, now) = live();
        for u in &updates {
            state.apply_update(u, now);
        }
        for u in &updates {
            prop_assert_eq!(state.apply_update(u, now), Outcome::Stale);
        }
        prop_assert_eq!(totals_of(&state), truth);
    }
}
