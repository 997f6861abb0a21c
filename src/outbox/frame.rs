//! One record on disk: a 24-byte header and the payload.
//!
//! ```text
//! [len: u32 LE][crc: u32 LE][seq: u64 LE][time_ms: u64 LE][payload: len bytes]
//! ```
//!
//! `crc` is CRC-32C (Castagnoli) over `len`, `seq`, `time_ms` and the payload, so a torn or
//! damaged length is caught like a torn payload. CRC-32C rather than xxhash: it is the
//! checksum storage formats use for exactly this job (ext4 metadata, iSCSI, LevelDB/RocksDB
//! logs, Kafka record batches), it detects every burst error up to 32 bits, and the `crc32c`
//! crate uses the CPU's CRC instruction (SSE 4.2 / ARMv8), so it costs nothing next to fsync.

/// Bytes before the payload.
pub const HEADER_LEN: usize = 24;

/// The largest payload a frame may carry (64 MiB): a length over it is damage, not a record.
pub const MAX_PAYLOAD: usize = 64 << 20;

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the log: 1, 2, 3... with no gaps.
    pub seq: u64,
    /// When it was appended (ms since the epoch).
    pub time_ms: u64,
    /// What the caller appended.
    pub payload: Vec<u8>,
}

/// What the bytes at one position hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole, intact frame of `len` bytes.
    Frame(Record, usize),
    /// The bytes end before the frame does (a write cut short): `have` of `need` bytes.
    Short {
        /// Bytes present.
        have: usize,
        /// Bytes the header says the frame needs (the header's size when it is cut).
        need: usize,
    },
    /// A whole frame whose checksum or length is wrong.
    Bad(&'static str),
}

/// The frame of `payload` as record `seq`, appended at `time_ms`.
///
/// # Panics
/// When `payload` is over [`MAX_PAYLOAD`] (callers check first).
pub fn encode(seq: u64, time_ms: u64, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() <= MAX_PAYLOAD, "payload over MAX_PAYLOAD");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = checksum(&out);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// CRC-32C of a frame's bytes, skipping the crc field itself.
fn checksum(frame: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&frame[..4]);
    crc32c::crc32c_append(crc, &frame[8..])
}

/// The payload length a header announces, if it is a plausible one.
pub fn payload_len(header: &[u8; HEADER_LEN]) -> Option<usize> {
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    (len <= MAX_PAYLOAD).then_some(len)
}

/// Decodes the frame at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Decoded {
    if bytes.len() < HEADER_LEN {
        return Decoded::Short {
            have: bytes.len(),
            need: HEADER_LEN,
        };
    }
    let header: &[u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().expect("header");
    let Some(len) = payload_len(header) else {
        return Decoded::Bad("length over 64 MiB");
    };
    let need = HEADER_LEN + len;
    if bytes.len() < need {
        return Decoded::Short {
            have: bytes.len(),
            need,
        };
    }
    let frame = &bytes[..need];
    let stored = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
    if stored != checksum(frame) {
        return Decoded::Bad("checksum mismatch");
    }
    let seq = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
    let time_ms = u64::from_le_bytes(frame[16..24].try_into().expect("8 bytes"));
    let record = Record {
        seq,
        time_ms,
        payload: frame[HEADER_LEN..].to_vec(),
    };
    Decoded::Frame(record, need)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let f = encode(7, 1_700_000_000_000, b"{\"a\":1}");
        assert_eq!(f.len(), HEADER_LEN + 7);
        let Decoded::Frame(r, len) = decode(&f) else {
            panic!("not a frame")
        };
        assert_eq!(len, f.len());
        assert_eq!((r.seq, r.time_ms), (7, 1_700_000_000_000));
        assert_eq!(r.payload, b"{\"a\":1}");
        let empty = encode(1, 0, b"");
        assert!(matches!(decode(&empty), Decoded::Frame(_, HEADER_LEN)));
    }

    #[test]
    fn every_cut_is_short() {
        let f = encode(3, 5, b"hello world");
        for cut in 0..f.len() {
            let need = if cut < HEADER_LEN {
                HEADER_LEN
            } else {
                f.len()
            };
            assert_eq!(decode(&f[..cut]), Decoded::Short { have: cut, need });
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let f = encode(9, 42, b"payload");
        for byte in 0..f.len() {
            for bit in 0..8 {
                let mut g = f.clone();
                g[byte] ^= 1 << bit;
                match decode(&g) {
                    Decoded::Frame(..) => panic!("flip at {byte}:{bit} went unnoticed"),
                    Decoded::Bad(_) | Decoded::Short { .. } => {}
                }
            }
        }
    }

    #[test]
    fn zeros_and_huge_lengths_are_bad() {
        assert_eq!(decode(&[0; 64]), Decoded::Bad("checksum mismatch"));
        let mut f = encode(1, 1, b"x");
        f[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&f), Decoded::Bad("length over 64 MiB"));
    }

    #[test]
    fn trailing_bytes_are_not_part_of_the_frame() {
        let mut f = encode(1, 1, b"ab");
        let len = f.len();
        f.extend_from_slice(&encode(2, 1, b"cd"));
        assert!(matches!(decode(&f), Decoded::Frame(r, l) if l == len && r.seq == 1));
    }
}
