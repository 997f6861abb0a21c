//! [`Text`]: the string type of stream entries and events. An entry read from Redis is
//! copied once into one buffer of its own (`redis::streams`); its id, field names and values,
//! and the event's `id`, `type` and `data`, are slices of that buffer: handing them on copies
//! no bytes and allocates nothing.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use bytes_utils::Str;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Immutable UTF-8 text, cheap to clone (a reference count, no copy).
///
/// It dereferences to `&str`, compares with `str` and `String`, and converts from and into
/// `String`. A `Text` keeps the buffer it is a slice of alive until the last `Text` sharing
/// it is dropped (for an entry's texts: that entry's bytes, nothing of other entries).
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(Str);

impl Text {
    /// Text of a string constant, without copying it.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Str::from_static(s))
    }

    /// Text of `bytes`, sharing them when they are valid UTF-8 (otherwise a copy with
    /// invalid sequences replaced by U+FFFD).
    pub fn from_utf8_lossy(bytes: Bytes) -> Self {
        match Str::from_inner(bytes) {
            Ok(s) => Self(s),
            Err(e) => Self::from(String::from_utf8_lossy(&e.into_inner()).into_owned()),
        }
    }

    /// The text as a `&str`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The bytes it shares (a reference count, no copy).
    pub fn to_bytes(&self) -> Bytes {
        self.0.inner().clone()
    }

    /// The same text as fred's string type (a command argument), sharing its bytes.
    pub(crate) fn to_str(&self) -> Str {
        self.0.clone()
    }
}

impl Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Text {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl Borrow<str> for Text {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Self(Str::from(s))
    }
}

impl From<&str> for Text {
    /// Copies `s` (for a constant, [`Text::from_static`] does not).
    fn from(s: &str) -> Self {
        Self(Str::from(s))
    }
}

impl From<&String> for Text {
    fn from(s: &String) -> Self {
        Self(Str::from(s.as_str()))
    }
}

impl From<&Text> for String {
    fn from(t: &Text) -> Self {
        t.as_str().to_owned()
    }
}

impl From<Text> for String {
    fn from(t: Text) -> Self {
        t.as_str().to_owned()
    }
}

impl PartialEq<str> for Text {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Text {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Text {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Text> for str {
    fn eq(&self, other: &Text) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Text> for &str {
    fn eq(&self, other: &Text) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Text> for String {
    fn eq(&self, other: &Text) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self)
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_taken_from_a_buffer_shares_it() {
        let buffer = Bytes::from_static(b"id-1booking.created");
        let id = Text::from_utf8_lossy(buffer.slice(0..4));
        assert_eq!(id, "id-1");
        assert_eq!(id.to_bytes().as_ptr(), buffer.as_ptr());
        let clone = id.clone();
        assert_eq!(clone.as_ptr(), id.as_ptr());
    }

    #[test]
    fn invalid_utf8_is_replaced_not_refused() {
        let t = Text::from_utf8_lossy(Bytes::from_static(b"a\xffb"));
        assert_eq!(t, "a\u{fffd}b");
    }

    #[test]
    fn it_serializes_as_a_json_string_and_compares_with_strings() {
        let t = Text::from("say \"hi\"");
        assert_eq!(serde_json::to_string(&t).unwrap(), r#""say \"hi\"""#);
        let back: Text = serde_json::from_str(r#""say \"hi\"""#).unwrap();
        assert_eq!(back, t);
        assert_eq!(String::from(t.clone()), "say \"hi\"".to_string());
        assert!(t == *"say \"hi\"" && "say \"hi\"" == t);
        assert_eq!(format!("{t} {t:?}"), "say \"hi\" \"say \\\"hi\\\"\"");
    }
}
