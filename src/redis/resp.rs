//! The Redis protocol (RESP2) as the worker's own connections (`direct_conn`) speak it: a
//! command's encoding ([`encode_command`]), the one-line replies of its handshake
//! ([`line_reply`]), and an XREADGROUP reply read straight from its bytes into [`Entry`]s as
//! they arrive ([`XReadReader`]): no tree of frames in between, which is where fred's read
//! path spends most of its per-entry work.

use std::ops::Range;

use crate::model::envelope::field;
use crate::model::text::Text;
use crate::redis::store::Entry;

/// Bytes that are not a well-formed RESP2 reply (the connection is then dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed reply from Redis: {0}")]
pub(crate) struct ProtocolError(&'static str);

/// A parsed XREADGROUP reply.
#[derive(Debug)]
pub(crate) enum ReadReply {
    /// The entries read, in reply order (deleted ones left out); none on a BLOCK timeout.
    Entries(Vec<Entry>),
    /// An error reply (`NOGROUP ...`, `NOPERM ...`), without its leading `-`.
    Error(String),
}

/// Appends `args` as one command: an array of bulk strings.
pub(crate) fn encode_command<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    out.reserve(16 + args.iter().map(|a| a.as_ref().len() + 16).sum::<usize>());
    push_header(out, b'*', args.len());
    for arg in args {
        let arg = arg.as_ref();
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// `kind`, `n` in decimal, CRLF (a header line, once per argument: `itoa`, not `fmt`).
fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    out.push(kind);
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A one-line reply: `Ok` for `+...` and `:...`, the error's text (without its `-`) for `-...`.
pub(crate) type LineReply = Result<(), String>;

/// The one-line reply (`+OK`, `:3`, `-ERR ...`) at the start of `buf` and the line's length;
/// `None` until the whole line is there.
///
/// # Errors
/// When the bytes are not RESP2 or the reply is not one line.
pub(crate) fn line_reply(buf: &[u8]) -> Result<Option<(LineReply, usize)>, ProtocolError> {
    Ok(match header(buf, 0)? {
        None => None,
        Some((b'+' | b':', _, len)) => Some((Ok(()), len)),
        Some((b'-', _, len)) => Some((Err(error_text(&buf[..len])), len)),
        Some(_) => return Err(ProtocolError("expected a one-line reply")),
    })
}

/// The text of an error reply's line (`-...\r\n`), without its `-` and CRLF.
fn error_text(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[1..line.len() - 2]).into_owned()
}

/// Where a bulk string of `n` bytes starting at `start` ends, its CRLF included.
fn bulk_end(start: usize, n: i64) -> Result<usize, ProtocolError> {
    usize::try_from(n)
        .ok()
        .and_then(|n| start.checked_add(n)?.checked_add(2))
        .ok_or(ProtocolError("bulk string length out of range"))
}

/// The header line at `at`: its type byte, its number (`$`, `*` and `:`; 0 for the others)
/// and where the line ends (after its CRLF). `None` while the line has not fully arrived.
fn header(buf: &[u8], at: usize) -> Result<Option<(u8, i64, usize)>, ProtocolError> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    match kind {
        b'$' | b'*' | b':' => Ok(number_line(buf, at + 1)?.map(|(n, end)| (kind, n, end))),
        b'+' | b'-' => {
            let Some(cr) = buf[at + 1..].iter().position(|&b| b == b'\r') else {
                return Ok(None);
            };
            let end = line_end(buf, at + 1 + cr)?;
            Ok(end.map(|end| (kind, 0, end)))
        }
        _ => Err(ProtocolError("unknown type byte")),
    }
}

/// The decimal number (`-1` for nil) of a header line starting at `start`, and where the line
/// ends; read in one pass (a reply has about ten such headers per entry).
fn number_line(buf: &[u8], start: usize) -> Result<Option<(i64, usize)>, ProtocolError> {
    let rest = buf.get(start..).unwrap_or_default();
    let negative = rest.first() == Some(&b'-');
    let first = usize::from(negative);
    let (mut n, mut i) = (0i64, first);
    loop {
        match rest.get(i) {
            None => return Ok(None),
            Some(&d @ b'0'..=b'9') if i - first < 18 => n = n * 10 + i64::from(d - b'0'),
            Some(b'\r') if i > first => break,
            Some(_) => return Err(ProtocolError("bad number in a header")),
        }
        i += 1;
    }
    let end = line_end(buf, start + i)?;
    Ok(end.map(|end| (if negative { -n } else { n }, end)))
}

/// Where a line whose CR is at `cr` ends (after its LF); `None` while the LF has not arrived.
fn line_end(buf: &[u8], cr: usize) -> Result<Option<usize>, ProtocolError> {
    match buf.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some(cr + 2)),
        Some(_) => Err(ProtocolError("line not ended by CRLF")),
    }
}

/// Reads an XREADGROUP reply as its bytes arrive, in one pass:
/// `[[stream, [[id, [field, value, ...]], ...]], ...]`, nil on a BLOCK timeout, or an error
/// reply. Each entry is taken as soon as all of it is in the buffer (an entry cut by the end
/// of a socket read is read again, whole, on the next call); entries whose fields are nil
/// (deleted since they were added) are left out. Each entry gets one buffer of its own, as
/// from fred's reply ([`own_span`]).
#[derive(Debug, Default)]
pub(crate) struct XReadReader {
    /// Where the next unread element starts.
    at: usize,
    /// Streams still to come (`None` before the reply's header).
    streams_left: Option<usize>,
    /// The stream being read and its entries still to come.
    stream: Option<(Text, usize)>,
    entries: Vec<Entry>,
}

impl XReadReader {
    /// Goes on reading `buf` (the buffer of the previous call, grown by later socket reads):
    /// the reply and its length once all of it is read (then it starts over); `None` until
    /// then.
    ///
    /// # Errors
    /// When the bytes are not RESP2 or not shaped like an XREADGROUP reply.
    pub(crate) fn read(&mut self, buf: &[u8]) -> Result<Option<(ReadReply, usize)>, ProtocolError> {
        match self.read_on(buf) {
            Ok(len) => {
                let entries = std::mem::take(&mut self.entries);
                let reply = match self.streams_left {
                    None => ReadReply::Error(error_text(&buf[..len])),
                    Some(_) => ReadReply::Entries(entries),
                };
                *self = XReadReader::default();
                Ok(Some((reply, len)))
            }
            Err(Stop::More) => Ok(None),
            Err(Stop::Bad(e)) => Err(e),
        }
    }

    /// Reads on from `self.at`; the reply's length when it is complete.
    fn read_on(&mut self, buf: &[u8]) -> Result<usize, Stop> {
        let mut flat: Vec<Range<usize>> = Vec::new();
        if self.streams_left.is_none() {
            let mut at = Cursor { buf, at: 0 };
            match at.header()? {
                (b'-', _) => return Ok(at.at),
                (b'*', n) => self.streams_left = Some(usize::try_from(n).unwrap_or(0)),
                _ => return Err(Stop::Bad(ProtocolError("expected an array"))),
            }
            self.at = at.at;
        }
        loop {
            let Some((stream, entries_left)) = &mut self.stream else {
                let Some(streams_left) = self.streams_left.as_mut() else {
                    return Ok(self.at);
                };
                if *streams_left == 0 {
                    return Ok(self.at);
                }
                let mut at = Cursor { buf, at: self.at };
                if at.array()? != Some(2) {
                    return Err(Stop::Bad(ProtocolError(
                        "a stream's reply is not [key, entries]",
                    )));
                }
                let key = at.bulk()?;
                let entries = at.array()?.unwrap_or(0);
                // Room for the entries at once (bounded: the count is the server's word).
                self.entries.reserve(entries.min(1024));
                self.stream = Some((super::streams::copied_text(&buf[key]), entries));
                *streams_left -= 1;
                self.at = at.at;
                continue;
            };
            if *entries_left == 0 {
                self.stream = None;
                continue;
            }
            let mut at = Cursor { buf, at: self.at };
            if at.array()? != Some(2) {
                return Err(Stop::Bad(ProtocolError("an entry is not [id, fields]")));
            }
            let id = at.bulk()?;
            if let Some(n) = at.array()? {
                flat.clear();
                for _ in 0..n {
                    flat.push(at.bulk()?);
                }
                let end = flat.last().map_or(id.end, |last| last.end);
                let (id, fields) = own_span(&buf[id.start..end], id.start, id, &flat);
                self.entries.push(Entry {
                    stream: stream.clone(),
                    id,
                    fields,
                    deliveries: 1,
                });
            } // else deleted since it was added
            *entries_left -= 1;
            self.at = at.at;
        }
    }
}

/// An entry's id and fields (`pieces`: name, value, ...; an odd last one left out, as
/// `streams::own_entry` does) as texts sharing one copy of the entry's bytes in the reply
/// (`span`, from the id to the last piece, which starts at `base` in the reply; the headers
/// and CRLFs between them included: one copy rather than one per piece, ~15% more bytes kept
/// per entry). The entry keeps only its own
/// bytes alive, not its read's buffer.
fn own_span(
    span: &[u8],
    base: usize,
    id: Range<usize>,
    pieces: &[Range<usize>],
) -> (Text, Vec<(Text, Text)>) {
    let mut cut = Text::cutter(bytes::Bytes::copy_from_slice(span));
    let mut at = base;
    // Field names the worker knows are its constants (see `field::known`).
    let mut text = |r: &Range<usize>, name: bool| {
        cut.skip(r.start - at);
        at = r.end;
        match name {
            true => cut.next_or_static(r.len(), field::known),
            false => cut.next(r.len()),
        }
    };
    let id = text(&id, false);
    let fields = pieces
        .chunks_exact(2)
        .map(|p| (text(&p[0], true), text(&p[1], false)))
        .collect();
    (id, fields)
}

/// Why reading stopped short of a whole reply.
enum Stop {
    /// The buffer ends inside it: read more.
    More,
    /// The bytes are not what was expected.
    Bad(ProtocolError),
}

impl From<ProtocolError> for Stop {
    fn from(e: ProtocolError) -> Stop {
        Stop::Bad(e)
    }
}

/// A read position in a reply.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    /// The next element's header.
    fn header(&mut self) -> Result<(u8, i64), Stop> {
        let (kind, n, after) = header(self.buf, self.at)?.ok_or(Stop::More)?;
        self.at = after;
        Ok((kind, n))
    }

    /// An array's length (`None` for nil).
    fn array(&mut self) -> Result<Option<usize>, Stop> {
        match self.header()? {
            (b'*', n) => Ok(usize::try_from(n).ok()),
            _ => Err(Stop::Bad(ProtocolError("expected an array"))),
        }
    }

    /// Where a bulk (or simple) string's bytes are in the buffer.
    fn bulk(&mut self) -> Result<Range<usize>, Stop> {
        let start = self.at;
        match self.header()? {
            (b'$', n) if n >= 0 => {
                let end = bulk_end(self.at, n)?;
                if self.buf.len() < end {
                    return Err(Stop::More);
                }
                if &self.buf[end - 2..end] != b"\r\n" {
                    return Err(Stop::Bad(ProtocolError("bulk string not ended by CRLF")));
                }
                let bytes = self.at..end - 2;
                self.at = end;
                Ok(bytes)
            }
            (b'+', _) => Ok(start + 1..self.at - 2),
            _ => Err(Stop::Bad(ProtocolError("expected a string"))),
        }
    }
}

#[cfg(test)]
#[path = "resp_tests.rs"]
mod tests;
