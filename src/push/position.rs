//! Positions: where a client is in a channel's history. A [`Position`] is the channel's epoch
//! (random, made when its history is first created; a new epoch means the history was lost
//! and recreated) and a stream id, written `<epoch>-<ms>-<seq>` and opaque to apps. A
//! connection's positions ([`Positions`]) travel as one SSE `id:`: base64url of a JSON object
//! `{channel: position}`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// The epoch of a position taken before the channel had any history.
pub const NO_EPOCH: &str = "0";

/// A position in one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The channel history's epoch ([`NO_EPOCH`] before it existed).
    pub epoch: String,
    /// Stream id: milliseconds.
    pub ms: u64,
    /// Stream id: sequence.
    pub seq: u64,
}

impl Position {
    /// The position of stream id `id` (`<ms>-<seq>`) in `epoch`.
    pub fn of(epoch: &str, id: &str) -> Option<Position> {
        let (ms, seq) = id.split_once('-')?;
        Some(Position {
            epoch: epoch.to_string(),
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// Parses `<epoch>-<ms>-<seq>`.
    pub fn parse(text: &str) -> Option<Position> {
        let (epoch, id) = text.split_once('-')?;
        let valid = !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_alphanumeric());
        if !valid {
            return None;
        }
        Position::of(epoch, id)
    }

    /// The stream id, `<ms>-<seq>`.
    pub fn stream_id(&self) -> String {
        format!("{}-{}", self.ms, self.seq)
    }

    /// Whether `self` comes after `other` in the same history. A message of another epoch
    /// is after a position taken before the channel existed; otherwise `None` (the history
    /// was recreated: no order).
    pub fn after(&self, other: &Position) -> Option<bool> {
        if self.epoch == other.epoch || other.epoch == NO_EPOCH {
            let order = (self.ms, self.seq).cmp(&(other.ms, other.seq));
            Some(order == Ordering::Greater || other.epoch != self.epoch)
        } else {
            None
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.epoch, self.ms, self.seq)
    }
}

/// The positions of every channel of a connection.
pub type Positions = BTreeMap<String, Position>;

/// The SSE `id:` of `positions`.
pub fn encode(positions: &Positions) -> String {
    let map: BTreeMap<&str, String> = positions
        .iter()
        .map(|(c, p)| (c.as_str(), p.to_string()))
        .collect();
    let json = serde_json::to_vec(&map).unwrap_or_default();
    base64url(&json)
}

/// The positions of an SSE `id:` (or a `since` value); `None` when it is not one.
pub fn decode(text: &str) -> Option<Positions> {
    let json = unbase64url(text.trim())?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&json).ok()?;
    map.into_iter()
        .map(|(c, p)| Some((c, Position::parse(&p)?)))
        .collect()
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url.
fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 3);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Decodes unpadded (or padded) base64url.
fn unbase64url(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        if chunk.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|a| a == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        for i in 0..chunk.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_back_and_order() {
        let p = Position::parse("a1b2c3d4-1700000000000-3").unwrap();
        assert_eq!(p.to_string(), "a1b2c3d4-1700000000000-3");
        let q = Position::parse("a1b2c3d4-1700000000000-4").unwrap();
        assert_eq!(q.after(&p), Some(true));
        assert_eq!(p.after(&q), Some(false));
        assert_eq!(p.after(&p), Some(false));
        let other = Position::parse("ffff0000-1-0").unwrap();
        assert_eq!(other.after(&p), None);
        assert_eq!(p.after(&Position::parse("0-0-0").unwrap()), Some(true));
        for bad in ["", "x", "a-1", "a-b-c", "-1-2", "a b-1-2"] {
            assert!(Position::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn ids_carry_every_channel() {
        for n in 0..6 {
            let mut ps = Positions::new();
            for i in 0..n {
                ps.insert(
                    format!("user:{i}é"),
                    Position::parse(&format!("e-{i}-{n}")).unwrap(),
                );
            }
            let id = encode(&ps);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
            assert_eq!(decode(&id), Some(ps));
        }
        assert_eq!(decode("!!"), None);
    }
}
