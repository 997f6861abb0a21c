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

    /// The texts of consecutive pieces of `bytes`, each sharing them: see [`TextCutter`].
    pub fn cutter(bytes: Bytes) -> TextCutter {
        TextCutter {
            whole: Str::from_inner(bytes.clone()).ok(),
            bytes,
            at: 0,
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

/// Cuts consecutive texts out of one buffer (an entry's id, field names and values). The
/// buffer is checked as UTF-8 once as a whole: a piece of valid text that starts and ends on
/// character boundaries is valid text itself. When the whole is not valid, or a piece cuts a
/// character, that piece is checked on its own as [`Text::from_utf8_lossy`] does, so every
/// piece comes out exactly as if it had been.
pub struct TextCutter {
    bytes: Bytes,
    whole: Option<Str>,
    at: usize,
}

impl TextCutter {
    /// Skips `len` bytes (bytes between the texts wanted).
    pub fn skip(&mut self, len: usize) {
        self.at += len;
    }

    /// The next `len` bytes as a text: the constant `known` returns for them when there is
    /// one (no reference count of the buffer to take and drop), else as [`TextCutter::next`].
    ///
    /// # Panics
    /// When fewer than `len` bytes are left.
    pub fn next_or_static(&mut self, len: usize, known: fn(&[u8]) -> Option<&'static str>) -> Text {
        match known(&self.bytes[self.at..self.at + len]) {
            Some(name) => {
                self.at += len;
                Text::from_static(name)
            }
            None => self.next(len),
        }
    }

    /// The next `len` bytes as a text.
    ///
    /// # Panics
    /// When fewer than `len` bytes are left.
    pub fn next(&mut self, len: usize) -> Text {
        let range = self.at..self.at + len;
        self.at += len;
        if let Some(whole) = &self.whole
            && let Some(piece) = whole.get(range.clone())
        {
            return Text(whole.slice_ref(piece));
        }
        Text::from_utf8_lossy(self.bytes.slice(range))
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
    fn a_cutter_gives_each_piece_as_if_it_were_checked_alone() {
        let cases: [(&[u8], &[usize]); 5] = [
            (b"1-0typebooking.created", &[3, 4, 15]),
            ("idé€x".as_bytes(), &[2, 2, 4]),
            // A valid whole cut inside a character: each half is replaced on its own.
            ("aéb".as_bytes(), &[2, 2]),
            (b"a\xffbcd", &[1, 2, 2]),
            (b"", &[0, 0]),
        ];
        for (bytes, lens) in cases {
            let buffer = Bytes::copy_from_slice(bytes);
            let mut cut = Text::cutter(buffer.clone());
            let mut at = 0;
            for &len in lens {
                let alone = Text::from_utf8_lossy(buffer.slice(at..at + len));
                assert_eq!(cut.next(len), alone, "{bytes:?} at {at}");
                at += len;
            }
        }
        // Valid pieces share the buffer.
        let buffer = Bytes::from_static(b"id-1booking.created");
        let mut cut = Text::cutter(buffer.clone());
        assert_eq!(cut.next(4).as_ptr(), buffer.as_ptr());
        assert_eq!(cut.next(15).as_ptr(), buffer[4..].as_ptr());
    }

    #[test]
    fn a_known_piece_is_the_constant_and_the_others_are_cut_as_before() {
        fn known(b: &[u8]) -> Option<&'static str> {
            (b == b"type").then_some("type")
        }
        let buffer = Bytes::from_static(b"typebooking.createdtypo");
        let mut cut = Text::cutter(buffer.clone());
        let name = cut.next_or_static(4, known);
        assert_eq!(name, "type");
        assert_ne!(
            name.as_ptr(),
            buffer.as_ptr(),
            "a constant, not a slice of the buffer"
        );
        assert_eq!(cut.next(15).as_ptr(), buffer[4..].as_ptr());
        let unknown = cut.next_or_static(4, known);
        assert_eq!(
            (unknown.as_str(), unknown.as_ptr()),
            ("typo", buffer[19..].as_ptr())
        );
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
