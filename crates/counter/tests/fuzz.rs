//! Fuzz targets for the topic rules, run as proptest tests on stable.
//!
//! Every edge turns its input into a [`Topic`] through `Topic::new` (gRPC
//! fields, gossip packets) or `Topic::from_url_path` (HTTP and websocket
//! paths), so these two functions are the parsers fuzzed here, each against
//! an independent oracle written from the contract (1 to 256 bytes of UTF-8,
//! no control character; in a path every `%` starts a two-hex-digit escape):
//! the oracle predicts the exact result, error variant and byte offset
//! included, for arbitrary strings, strings over an alphabet rich in `%`,
//! hex digits, control and multi-byte characters, and strings around the
//! 256-byte limit. A round trip checks that any valid topic, percent-encoded
//! in any mix of escaped and literal characters and of hex case, comes back
//! unchanged from `from_url_path`.
//!
//! Cases per target: `PROPTEST_CASES` when set (the long run, see
//! `docs/fuzzing.md`), else a few thousand for `cargo test`. A failing input
//! is saved by proptest in `crates/counter/proptest-regressions/fuzz.txt`,
//! which is committed and replayed first on every later run.

use headcount_counter::{MAX_TOPIC_BYTES, Topic, TopicError};
use proptest::{
    prelude::*,
    test_runner::{Config, FileFailurePersistence},
};

/// Cases per target in a plain `cargo test`.
const CI_CASES: u32 = 4_000;

/// Where proptest keeps the seeds of failing inputs (committed).
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/fuzz.txt");

/// `PROPTEST_CASES` when set, else `ci` cases; failures persisted in [`REGRESSIONS`].
fn config(ci: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = ci;
    }
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS)));
    config
}

// ---------------------------------------------------------------- oracles

/// What `Topic::new` must answer, from the contract alone.
fn expected_new(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong(name.len()));
    }
    match name.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, _)) => Err(TopicError::ControlCharacter(at)),
        None => Ok(()),
    }
}

/// What `Topic::from_url_path` must answer: the decoded name, or the error.
fn expected_from_url_path(raw: &str) -> Result<String, TopicError> {
    let bytes = raw.as_bytes();
    for (at, &byte) in bytes.iter().enumerate() {
        let escape = bytes.get(at + 1..at + 3);
        if byte == b'%' && !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
            return Err(TopicError::MalformedEscape(at));
        }
    }
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = std::str::from_utf8(&bytes[at + 1..at + 3]).expect("two ASCII hex digits");
            decoded.push(u8::from_str_radix(hex, 16).expect("checked hex"));
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    let decoded = String::from_utf8(decoded).map_err(|_| TopicError::NotUtf8)?;
    expected_new(&decoded).map(|()| decoded)
}

/// The invariants of any accepted topic.
fn assert_valid(topic: &Topic) -> Result<(), TestCaseError> {
    prop_assert!(!topic.is_empty() && topic.len() <= MAX_TOPIC_BYTES, "{topic:?}");
    prop_assert!(!topic.chars().any(char::is_control), "{topic:?}");
    prop_assert_eq!(Topic::new(topic.as_str()), Ok(topic.clone()), "re-validates");
    Ok(())
}

// ------------------------------------------------------------- strategies

/// Any characters, control and unassigned-plane ones included.
fn any_chars(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// Strings over an alphabet where escapes, near-escapes, control and
/// multi-byte characters are common.
fn escape_heavy(max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => prop::sample::select(vec![
            "%", "%%", "%2F", "%2f", "%25", "%41", "%C3", "%A9", "%c3%a9", "%E2%82%AC", "%F0%9F%98%80", "%FF",
            "%80", "%00", "%0A", "%7F", "%C2%85", "%zz", "%g1", "%1", "%0", "+", "/", " ", "a", "Z", "0", "f",
            "é", "€", "😀", "\n", "\u{7f}", "\u{85}", "\u{0}", "\u{200b}", "\u{fffd}",
        ]).prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..max).prop_map(|pieces| pieces.concat())
}

/// Strings of one to four-byte characters whose length is around 256 bytes.
fn near_the_limit() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!['a', 'é', '€', '😀']),
        0usize..8,
        prop::sample::select(vec!['a', 'é', '€', '😀', '\u{9f}', '\n']),
    )
        .prop_map(|(fill, extra, last)| {
            let mut name = String::new();
            while name.len() + fill.len_utf8() <= MAX_TOPIC_BYTES - 4 {
                name.push(fill);
            }
            for _ in 0..extra {
                name.push(last);
            }
            name
        })
}

/// Any of the above.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![any_chars(300), escape_heavy(120), near_the_limit()]
}

/// A valid topic: 1 to 256 bytes of non-control characters.
fn valid_topic() -> impl Strategy<Value = String> {
    // Control characters are not topic characters: mapped, not filtered, so
    // long runs never hit proptest's reject limit.
    let char = any::<char>().prop_map(|c| if c.is_control() { '_' } else { c });
    proptest::collection::vec(char, 1..=MAX_TOPIC_BYTES).prop_map(|chars| {
        let mut name = String::new();
        for c in chars {
            if name.len() + c.len_utf8() > MAX_TOPIC_BYTES {
                break;
            }
            name.push(c);
        }
        name
    })
}

/// `name` percent-encoded: each character escaped or literal as `escape`
/// says (a `%` always escaped), hex digits in upper or lower case.
fn percent_encode(name: &str, escape: &[bool], lower: &[bool]) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        let escaped = c == '%' || escape.get(i).copied().unwrap_or(true);
        if !escaped {
            out.push(c);
            continue;
        }
        let mut buf = [0u8; 4];
        for byte in c.encode_utf8(&mut buf).bytes() {
            if lower.get(i).copied().unwrap_or(false) {
                out.push_str(&format!("%{byte:02x}"));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    out
}

// ------------------------------------------------------------------ targets

proptest! {
    #![proptest_config(config(CI_CASES))]

    /// `Topic::new` answers exactly what the contract says, on any string.
    #[test]
    fn topic_new_matches_the_contract(name in hostile_string()) {
        let topic = Topic::new(&name);
        prop_assert_eq!(topic.as_ref().map(drop).map_err(Clone::clone), expected_new(&name), "{:?}", name);
        if let Ok(topic) = topic {
            assert_valid(&topic)?;
            prop_assert_eq!(topic.as_str(), name.as_str());
            prop_assert_eq!(Topic::try_from(name.as_str()), Ok(topic));
        }
    }

    /// `Topic::from_url_path` accepts only well-formed escapes whose
    /// decoded bytes are a valid topic, and decodes them exactly.
    #[test]
    fn topic_from_url_path_matches_the_contract(raw in hostile_string()) {
        let topic = Topic::from_url_path(&raw);
        let expected = expected_from_url_path(&raw);
        prop_assert_eq!(topic.as_ref().map(Topic::to_string).map_err(Clone::clone), expected, "{:?}", raw);
        if let Ok(topic) = topic {
            assert_valid(&topic)?;
        }
    }

    /// A valid topic, percent-encoded in any way a client may choose, comes
    /// back unchanged; the same string taken as is (gRPC) is the same topic.
    #[test]
    fn valid_topics_round_trip_through_any_percent_encoding(
        name in valid_topic(),
        escape in proptest::collection::vec(any::<bool>(), 0..=MAX_TOPIC_BYTES),
        lower in proptest::collection::vec(any::<bool>(), 0..=MAX_TOPIC_BYTES),
    ) {
        let encoded = percent_encode(&name, &escape, &lower);
        let decoded = Topic::from_url_path(&encoded);
        prop_assert_eq!(decoded.map(|topic| topic.to_string()), Ok(name.clone()), "{:?}", encoded);
        prop_assert_eq!(Topic::new(&name).map(|topic| topic.to_string()), Ok(name));
    }
}
