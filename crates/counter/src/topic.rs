//! The one place where the topic rules of the product contract live.
//!
//! A topic is 1 to 256 bytes of UTF-8 with no control characters. Every edge
//! (HTTP path, websocket path, gRPC field, gossip packet) turns its input into a
//! [`Topic`] through this module, so an invalid name can never reach a counter.

use std::{borrow::Borrow, fmt, ops::Deref, sync::Arc};

/// Longest topic, in bytes of UTF-8.
pub const MAX_TOPIC_BYTES: usize = 256;

/// A validated topic name. Cheap to clone (shared, immutable string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(Arc<str>);

/// Why a string is not a topic. The message is shown to clients as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic has no bytes.
    #[error("topic is empty")]
    Empty,
    /// The topic is longer than [`MAX_TOPIC_BYTES`].
    #[error("topic is {0} bytes long; the limit is 256")]
    TooLong(usize),
    /// The topic holds a control character (U+0000–U+001F, U+007F–U+009F).
    #[error("topic contains a control character at byte {0}")]
    ControlCharacter(usize),
    /// The percent-decoded bytes are not UTF-8.
    #[error("topic is not valid UTF-8 after percent-decoding")]
    NotUtf8,
    /// A `%` not followed by two hex digits (`%zz`, a lone `%`).
    #[error("topic has a malformed percent escape at byte {0}")]
    MalformedEscape(usize),
}

impl Topic {
    /// Validates `name` as a topic.
    pub fn new(name: &str) -> Result<Self, TopicError> {
        validate(name)?;
        Ok(Self(Arc::from(name)))
    }

    /// Validates the rest of a URL path after an endpoint's prefix: the
    /// percent-decoded string is the topic (`%2Fblog` names `/blog`).
    pub fn from_url_path(raw: &str) -> Result<Self, TopicError> {
        let mut escapes = raw.match_indices('%').map(|(at, _)| at);
        if let Some(at) = escapes.find(|&at| {
            !raw.as_bytes()
                .get(at + 1..at + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
        }) {
            return Err(TopicError::MalformedEscape(at));
        }
        let decoded = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| TopicError::NotUtf8)?;
        Self::new(&decoded)
    }

    /// The topic as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate(name: &str) -> Result<(), TopicError> {
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

impl Deref for Topic {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl TryFrom<&str> for Topic {
    type Error = TopicError;
    fn try_from(name: &str) -> Result<Self, TopicError> {
        Self::new(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_plain_unicode_and_slashes() {
        for name in ["news", "blog/post-1", "/blog/post-1", "café", "ニュース", " spaced "] {
            assert_eq!(Topic::new(name).map(|t| t.to_string()), Ok(name.to_owned()));
        }
    }

    #[test]
    fn length_bounds_are_in_bytes() {
        assert_eq!(Topic::new(""), Err(TopicError::Empty));
        assert!(Topic::new(&"a".repeat(256)).is_ok());
        assert_eq!(Topic::new(&"a".repeat(257)), Err(TopicError::TooLong(257)));
        // 128 two-byte characters are exactly 256 bytes.
        assert!(Topic::new(&"é".repeat(128)).is_ok());
        assert_eq!(Topic::new(&"é".repeat(129)), Err(TopicError::TooLong(258)));
    }

    #[test]
    fn control_characters_are_refused() {
        for (name, at) in [("a\nb", 1), ("\0", 0), ("ab\u{7f}", 2), ("x\u{85}", 1), ("\t", 0)] {
            assert_eq!(Topic::new(name), Err(TopicError::ControlCharacter(at)), "{name:?}");
        }
    }

    #[test]
    fn url_paths_are_percent_decoded() {
        let decoded = |raw| Topic::from_url_path(raw).map(|t| t.to_string());
        assert_eq!(decoded("news"), Ok("news".to_owned()));
        assert_eq!(decoded("blog/post-1"), Ok("blog/post-1".to_owned()));
        assert_eq!(decoded("%2Fblog%2Fpost-1"), Ok("/blog/post-1".to_owned()));
        assert_eq!(decoded("caf%C3%A9"), Ok("café".to_owned()));
        assert_eq!(decoded("%0A"), Err(TopicError::ControlCharacter(0)));
        assert_eq!(decoded("%FF"), Err(TopicError::NotUtf8));
        assert_eq!(decoded(""), Err(TopicError::Empty));
    }

    #[test]
    fn malformed_escapes_are_refused() {
        for (raw, at) in [
            ("%zz", 0),
            ("%", 0),
            ("a%", 1),
            ("a%2", 1),
            ("ok%2Fthen%g1", 9),
            ("%%41", 0),
        ] {
            assert_eq!(
                Topic::from_url_path(raw),
                Err(TopicError::MalformedEscape(at)),
                "{raw:?}"
            );
        }
        assert_eq!(
            Topic::from_url_path("100%25").map(|t| t.to_string()),
            Ok("100%".to_owned())
        );
    }

    proptest! {
        #[test]
        fn valid_topics_round_trip_through_percent_encoding(name in "[^\\p{Cc}]{1,64}") {
            prop_assume!(name.len() <= MAX_TOPIC_BYTES);
            let encoded = percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC).to_string();
            prop_assert_eq!(Topic::from_url_path(&encoded).map(|t| t.to_string()), Ok(name));
        }

        #[test]
        fn never_panics_and_accepts_only_valid(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let name = String::from_utf8_lossy(&bytes);
            if let Ok(topic) = Topic::new(&name) {
                prop_assert!(!topic.is_empty() && topic.len() <= MAX_TOPIC_BYTES);
                prop_assert!(!topic.chars().any(char::is_control));
            }
        }
    }
}
