//! Stream and consumer-group commands of the hot path and recovery: group creation,
//! XREADGROUP, XACK, XPENDING, XCLAIM, XADD, and the reply parsers.

use std::time::Duration;

use bytes::BytesMut;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, Resp3Frame, Value};

use crate::model::text::Text;
use crate::redis::direct_conn::DirectConnection;
use crate::redis::error::{RedisErrorKind, StoreError};
use crate::redis::replicas::Replication;
use crate::redis::store::{Entry, PendingEntry, Reader, Store, cmd, keyed};

impl Store {
    /// Creates `group` on `stream` at `0` (MKSTREAM); an existing group is success.
    ///
    /// # Errors
    /// Any other Redis error.
    pub async fn ensure_group(&self, stream: &str, group: &str) -> Result<(), StoreError> {
        let args: Vec<Value> = vec![
            "CREATE".into(),
            stream.into(),
            group.into(),
            "0".into(),
            "MKSTREAM".into(),
        ];
        match self
            .cmd
            .custom::<Value, _>(keyed("XGROUP", stream), args)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.error(format!("XGROUP CREATE {stream}"), e) {
                e if e.kind == RedisErrorKind::BusyGroup => Ok(()),
                e => Err(e),
            },
        }
    }

    /// XREADGROUP of new entries (`>`) from `streams`, at most `count` per stream, blocking
    /// up to `block` (not at all with `None`) on the dedicated reader connection. On a cluster:
    /// one read per slot group, none blocking (`block` is ignored; see
    /// [`Store::read_slot_groups`]).
    ///
    /// # Errors
    /// Redis errors, NOGROUP included (see [`StoreError::is_nogroup`]).
    pub async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        streams: &[String],
        count: usize,
        block: Option<Duration>,
    ) -> Result<Vec<Entry>, StoreError> {
        match &self.reader {
            Reader::Direct(direct) => direct
                .read_group(group, consumer, streams, count, block)
                .await
                .map_err(|e| self.error("XREADGROUP", e)),
            Reader::Cluster(_) => {
                let groups = super::cluster::group_by_slot(streams);
                self.read_slot_groups(group, consumer, &groups, count).await
            }
        }
    }

    /// One non-blocking XREADGROUP of `streams` (all in one slot) on `client`, a cluster's
    /// reader (a single node reads on `direct_conn`); see [`Store::read_slot_groups`].
    pub(super) async fn read_group_one(
        &self,
        client: &Client,
        group: &str,
        consumer: &str,
        streams: &[String],
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut args: Vec<Value> = vec![
            "GROUP".into(),
            group.into(),
            consumer.into(),
            "COUNT".into(),
            (count as i64).into(),
        ];
        args.push("STREAMS".into());
        args.extend(streams.iter().map(|s| Value::from(s.as_str())));
        args.extend(streams.iter().map(|_| Value::from(">")));
        // On a cluster a read may meet MOVED/ASK (resharding, failover), which fred follows
        // by sending again: up to 3 attempts (a single node's read is sent once:
        // `direct_conn`).
        let options = Options {
            timeout: Some(Duration::from_secs(15)),
            max_attempts: Some(3),
            ..Default::default()
        };
        // fred 10.1 routes a custom command by `ClusterHash::Custom` only (an `Offset` falls
        // back to the first string argument, `GROUP`, and costs a MOVED): name the slot.
        let slot = streams.first().map_or(0, |s| super::cluster::slot(s));
        let command = CustomCommand::new_static("XREADGROUP", ClusterHash::Custom(slot), false);
        let reply = client
            .with_options(&options)
            .custom_raw(command, args)
            .await
            .map_err(|e| self.error("XREADGROUP", e))?;
        if let Resp3Frame::SimpleError { .. } | Resp3Frame::BlobError { .. } = reply {
            // fred's own conversion, so the error reads as from any other command.
            let e = Value::try_from(reply).err().unwrap_or_else(|| {
                fred::error::Error::new(fred::error::ErrorKind::Unknown, "error reply")
            });
            return Err(self.error("XREADGROUP", e));
        }
        Ok(parse_xread(reply))
    }

    /// XACK of the handled entries of each of `batches` (`(stream, ids, delete)`), and XDEL
    /// of a `delete` batch's entries (the redeliver stream's) once acknowledged; the answer
    /// of each batch, in order. On a single node the XACKs go in one write on the
    /// acknowledging connection (`direct_conn`), the XDELs in a second; on a cluster each
    /// batch goes through fred, concurrently.
    ///
    /// A failed batch's entries stay pending and are redelivered (at-least-once).
    pub async fn ack_streams(
        &self,
        group: &str,
        batches: &[(&str, &[&Text], bool)],
    ) -> Vec<Result<(), StoreError>> {
        let Some(direct) = &self.acks else {
            let each = batches
                .iter()
                .map(|&(stream, ids, delete)| self.ack(stream, group, ids, delete));
            return futures::future::join_all(each).await;
        };
        let xacks: Vec<Vec<&str>> = batches
            .iter()
            .map(|&(stream, ids, _)| id_command(&["XACK", stream, group], ids))
            .collect();
        let mut answers = self.one_line(direct, &xacks).await;
        // XDEL once the XACK succeeded, as on fred's path.
        let deleting: Vec<usize> = (0..batches.len())
            .filter(|&i| batches[i].2 && answers[i].is_ok())
            .collect();
        if !deleting.is_empty() {
            let xdels: Vec<Vec<&str>> = deleting
                .iter()
                .map(|&i| id_command(&["XDEL", batches[i].0], batches[i].1))
                .collect();
            let deleted = self.one_line(direct, &xdels).await;
            for (i, answer) in deleting.into_iter().zip(deleted) {
                answers[i] = answer;
            }
        }
        answers
    }

    /// `commands` (each `NAME stream ...`) on the single node's acknowledging connection;
    /// each one's answer as a [`StoreError`] of `NAME stream`.
    async fn one_line(
        &self,
        direct: &DirectConnection,
        commands: &[Vec<&str>],
    ) -> Vec<Result<(), StoreError>> {
        let error = |args: &[&str], e| self.error(args[..2].join(" "), e);
        match direct.one_line_commands(commands).await {
            Ok(answers) => answers
                .into_iter()
                .zip(commands)
                .map(|(answer, args)| answer.map_err(|e| error(args, e)))
                .collect(),
            Err(e) => commands.iter().map(|a| Err(error(a, e.clone()))).collect(),
        }
    }

    /// XACK of handled entries of one stream, in one command (and XDEL of them when
    /// `delete`, for the redeliver stream).
    ///
    /// # Errors
    /// Redis errors; the entries then stay pending and are redelivered (at-least-once).
    async fn ack(
        &self,
        stream: &str,
        group: &str,
        ids: &[&Text],
        delete: bool,
    ) -> Result<(), StoreError> {
        let mut args: Vec<Value> = Vec::with_capacity(ids.len() + 2);
        args.push(stream.into());
        args.push(group.into());
        args.extend(ids.iter().map(|&i| text_arg(i)));
        self.call("XACK", args).await?;
        if delete {
            let mut args: Vec<Value> = Vec::with_capacity(ids.len() + 1);
            args.push(stream.into());
            args.extend(ids.iter().map(|&i| text_arg(i)));
            self.call("XDEL", args).await?;
        }
        Ok(())
    }

    /// Consumers with pending entries on `stream`: `(consumer, count)`.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn pending_consumers(
        &self,
        stream: &str,
        group: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let reply = self
            .call("XPENDING", vec![stream.into(), group.into()])
            .await?;
        let mut out = Vec::new();
        if let Value::Array(parts) = reply
            && let Some(Value::Array(consumers)) = parts.into_iter().nth(3)
        {
            for c in consumers {
                if let Value::Array(pair) = c {
                    let name = pair.first().and_then(text).unwrap_or_default();
                    let count = pair.get(1).and_then(Value::as_u64).unwrap_or(0);
                    out.push((name, count));
                }
            }
        }
        Ok(out)
    }

    /// Pending entries of `stream` idle at least `min_idle`, optionally of one consumer.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn pending_entries(
        &self,
        stream: &str,
        group: &str,
        min_idle: Duration,
        count: usize,
        consumer: Option<&str>,
    ) -> Result<Vec<PendingEntry>, StoreError> {
        let mut args: Vec<Value> = vec![
            stream.into(),
            group.into(),
            "IDLE".into(),
            (min_idle.as_millis() as i64).into(),
            "-".into(),
            "+".into(),
            (count as i64).into(),
        ];
        if let Some(c) = consumer {
            args.push(c.into());
        }
        let reply = self.call("XPENDING", args).await?;
        Ok(reply
            .into_array()
            .into_iter()
            .filter_map(|row| {
                let row = row.into_array();
                Some(PendingEntry {
                    id: text(row.first()?)?,
                    deliveries: row.get(3)?.as_u64()?,
                })
            })
            .collect())
    }

    /// XCLAIM of `ids` to `consumer` if still idle at least `min_idle`. Returns the claimed
    /// entries (deliveries filled in by the caller); deleted entries are dropped by Redis.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        ids: &[String],
    ) -> Result<Vec<Entry>, StoreError> {
        let mut args: Vec<Value> = vec![
            stream.into(),
            group.into(),
            consumer.into(),
            (min_idle.as_millis() as i64).into(),
        ];
        args.extend(ids.iter().map(|i| Value::from(i.as_str())));
        let reply = self.call("XCLAIM", args).await?;
        Ok(parse_entries(&stream.into(), reply))
    }

    /// Resets the idle time of entries this consumer is still working on (XCLAIM JUSTID to
    /// itself), so the visibility-timeout backstop never steals from a live, slow handler.
    ///
    /// # Errors
    /// Redis errors.
    pub async fn touch(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[String],
    ) -> Result<(), StoreError> {
        let mut args: Vec<Value> = vec![stream.into(), group.into(), consumer.into(), 0.into()];
        args.extend(ids.iter().map(|i| Value::from(i.as_str())));
        args.push("JUSTID".into());
        self.call("XCLAIM", args).await.map(|_| ())
    }

    /// XADD of `fields` to `stream` (sent once), then `WAIT` on the same connection when
    /// `[redis] wait_replicas` > 0 (`redis::replicas`): the entry id and how many replicas
    /// have it.
    ///
    /// # Errors
    /// Redis errors (of the XADD, or of the WAIT after it: the entry may then exist).
    pub async fn xadd_waited(
        &self,
        stream: &str,
        fields: &[(String, String)],
    ) -> Result<(String, Option<Replication>), StoreError> {
        let client = self.waited_client();
        let id = self.xadd_on(&client, stream, fields).await?;
        Ok((id, self.wait_on(&client, stream).await?))
    }

    pub(crate) async fn xadd_on(
        &self,
        client: &Client,
        stream: &str,
        fields: &[(String, String)],
    ) -> Result<String, StoreError> {
        let mut args: Vec<Value> = vec![stream.into(), "*".into()];
        for (k, v) in fields {
            args.push(k.as_str().into());
            args.push(v.as_str().into());
        }
        // Sent once: replaying a non-idempotent XADD after a connection cut could append the
        // event twice; the caller gets an error instead and retries with the same id.
        let once = Options {
            max_attempts: Some(1),
            ..Default::default()
        };
        let reply: Value = client
            .with_options(&once)
            .custom(cmd("XADD"), args)
            .await
            .map_err(|e| self.error(format!("XADD {stream}"), e))?;
        reply
            .as_str()
            .map(|s| s.into_owned())
            .ok_or_else(|| StoreError::new("XADD", RedisErrorKind::Other, "no id in reply"))
    }

    /// XADD of `fields` to `stream` once per event id within the guard's bounds (see
    /// `scripts/publish_once.lua`): the id guard `guard` is checked, added to and trimmed
    /// atomically with the XADD. Sent once: after a cut the caller gets an error and retries
    /// with the same id, which the guard makes harmless. Then (for a new entry) `WAIT` on the
    /// same connection when `[redis] wait_replicas` > 0 (`redis::replicas`); a duplicate wrote
    /// nothing: no WAIT.
    ///
    /// # Errors
    /// Redis errors (of the script, or of the WAIT after it: the entry exists then).
    pub async fn xadd_once_waited(
        &self,
        x: &XaddOnce<'_>,
    ) -> Result<(Appended, Option<Replication>), StoreError> {
        let client = self.waited_client();
        let appended = self.xadd_once_on(&client, x).await?;
        let replication = match appended {
            Appended::New(_) => self.wait_on(&client, x.stream).await?,
            Appended::Duplicate(_) => None,
        };
        Ok((appended, replication))
    }

    async fn xadd_once_on(
        &self,
        client: &Client,
        x: &XaddOnce<'_>,
    ) -> Result<Appended, StoreError> {
        let script = &self.publish_once;
        let mut args: Vec<Value> = Vec::with_capacity(7 + x.fields.len() * 2);
        args.push(script.sha1().to_string().into());
        args.push(2.into());
        args.push(x.stream.into());
        args.push(x.guard.into());
        args.push(x.id.into());
        args.push((x.window.as_millis().max(1) as i64).into());
        args.push((x.max_ids.max(1) as i64).into());
        for (k, v) in x.fields {
            args.push(k.as_str().into());
            args.push(v.as_str().into());
        }
        let once = client.with_options(&Options {
            max_attempts: Some(1),
            ..Default::default()
        });
        // EVALSHA sha 2 stream guard ...: the stream's slot picks the Cluster node (fred 10.1
        // routes custom commands by `ClusterHash::Custom` only).
        let slot = super::cluster::slot(x.stream);
        let evalsha = || CustomCommand::new_static("EVALSHA", ClusterHash::Custom(slot), false);
        let reply: Result<Value, _> = match once.custom(evalsha(), args.clone()).await {
            // Loaded on the stream's node only: fred's `Script::load` goes to every master
            // and waits for all of them (one frozen master would hold up this publish).
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                let load = CustomCommand::new_static("SCRIPT", ClusterHash::Custom(slot), false);
                match once
                    .custom::<Value, _>(load, vec!["LOAD", super::store::PUBLISH_ONCE])
                    .await
                {
                    Ok(_) => once.custom(evalsha(), args).await,
                    Err(e) => Err(e),
                }
            }
            r => r,
        };
        let op = format!("publish to {}", x.stream);
        let reply = reply.map_err(|e| self.error(op.clone(), e))?;
        let unexpected = |reply: &Value| {
            let what = format!("unexpected reply {reply:?} from the publish script");
            StoreError::new(op.clone(), RedisErrorKind::Other, what)
        };
        let parts = match &reply {
            Value::Array(parts) if parts.len() == 2 => parts,
            _ => return Err(unexpected(&reply)),
        };
        match (parts[0].as_i64(), text(&parts[1])) {
            (Some(1), Some(entry)) => Ok(Appended::New(entry)),
            (Some(0), original) => Ok(Appended::Duplicate(original)),
            _ => Err(unexpected(&reply)),
        }
    }
}

/// One event for [`Store::xadd_once_waited`].
#[derive(Debug, Clone, Copy)]
pub struct XaddOnce<'a> {
    /// The type stream.
    pub stream: &'a str,
    /// Its id guard (`Keys::dedup`).
    pub guard: &'a str,
    /// The event id.
    pub id: &'a str,
    /// How long the guard remembers an id.
    pub window: Duration,
    /// Most ids the guard keeps (the oldest go first).
    pub max_ids: u64,
    /// The entry's fields.
    pub fields: &'a [(String, String)],
}

/// What [`Store::xadd_once_waited`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Appended as this new entry id.
    New(String),
    /// The id was published within the window: nothing written. The original entry's id,
    /// or `None` when the stream no longer holds it (trimmed).
    Duplicate(Option<String>),
}

/// A reply value as text (invalid UTF-8 replaced).
pub(crate) fn text(v: &Value) -> Option<String> {
    v.as_str_lossy().map(|s| s.into_owned())
}

/// Parses an XREADGROUP reply frame: `[[stream, [[id, [f, v, ...]], ...]], ...]` (a map of
/// streams over RESP3) or nil. Read from the frame itself: converting it into fred's `Value`s
/// first would allocate every array of the reply once more, two per entry.
fn parse_xread(reply: Resp3Frame) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut add = |key: Resp3Frame, entries: Resp3Frame| {
        let Some(stream) = frame_bytes(&key).map(copied_text) else {
            return;
        };
        for entry in frame_items(entries) {
            let mut parts = frame_items(entry).into_iter();
            let (Some(id), Some(fields)) = (parts.next(), parts.next()) else {
                continue;
            };
            if matches!(fields, Resp3Frame::Null) {
                continue; // deleted since it was added
            }
            let Some(id) = frame_bytes(&id) else { continue };
            let flat = frame_items(fields);
            let (id, fields) = own_entry(id, &flat, |f| frame_bytes(f).unwrap_or_default());
            out.push(Entry {
                stream: stream.clone(),
                id,
                fields,
                deliveries: 1,
            });
        }
    };
    match reply {
        Resp3Frame::Map { data, .. } => data.into_iter().for_each(|(k, v)| add(k, v)),
        other => {
            for stream_reply in frame_items(other) {
                let mut parts = frame_items(stream_reply).into_iter();
                if let (Some(key), Some(entries)) = (parts.next(), parts.next()) {
                    add(key, entries);
                }
            }
        }
    }
    out
}

/// The items of an array frame (none for anything else, nil included).
fn frame_items(frame: Resp3Frame) -> Vec<Resp3Frame> {
    match frame {
        Resp3Frame::Array { data, .. } | Resp3Frame::Push { data, .. } => data,
        _ => Vec::new(),
    }
}

/// The bytes of a string frame.
fn frame_bytes(frame: &Resp3Frame) -> Option<&[u8]> {
    match frame {
        Resp3Frame::BlobString { data, .. }
        | Resp3Frame::SimpleString { data, .. }
        | Resp3Frame::VerbatimString { data, .. } => Some(data),
        _ => None,
    }
}

/// A command of `head` followed by `ids`.
fn id_command<'a>(head: &[&'a str], ids: &[&'a Text]) -> Vec<&'a str> {
    let mut args = Vec::with_capacity(head.len() + ids.len());
    args.extend_from_slice(head);
    args.extend(ids.iter().map(|id| id.as_str()));
    args
}

/// Text of its own (not sharing the reply's buffer), invalid UTF-8 replaced.
pub(super) fn copied_text(bytes: &[u8]) -> Text {
    Text::from(&*String::from_utf8_lossy(bytes))
}

/// Copies an entry's id and its field names and values (`flat`: name, value, ...) into one
/// buffer of its own and returns them as [`Text`]s sharing it (invalid UTF-8 replaced).
///
/// One allocation per entry rather than one per string; and not the reply's buffer itself,
/// so an entry held for long (a slow handler) keeps only its own bytes alive, not its whole
/// read's reply: memory stays bounded by the entries held, as if each were copied.
fn own_entry<T>(id: &[u8], flat: &[T], bytes: impl Fn(&T) -> &[u8]) -> (Text, Vec<(Text, Text)>) {
    let pairs = flat.chunks_exact(2);
    let total = id.len()
        + pairs
            .clone()
            .flatten()
            .map(|f| bytes(f).len())
            .sum::<usize>();
    let mut buf = BytesMut::with_capacity(total);
    buf.extend_from_slice(id);
    for f in pairs.clone().flatten() {
        buf.extend_from_slice(bytes(f));
    }
    let mut cut = Text::cutter(buf.freeze());
    let id = cut.next(id.len());
    let fields = pairs
        .map(|p| {
            let name = cut.next_or_static(bytes(&p[0]).len(), crate::model::envelope::field::known);
            (name, cut.next(bytes(&p[1]).len()))
        })
        .collect();
    (id, fields)
}

/// Parses `[[id, [f, v, ...]], ...]`; entries whose fields are nil (deleted) are skipped.
/// Each entry's texts share one buffer of the entry's own ([`own_entry`]).
pub(crate) fn parse_entries(stream: &Text, reply: Value) -> Vec<Entry> {
    fn bytes(v: &Value) -> &[u8] {
        v.as_bytes().unwrap_or_default()
    }
    reply
        .into_array()
        .into_iter()
        .filter_map(|entry| {
            let mut parts = entry.into_array().into_iter();
            let id = parts.next()?;
            let id = id.as_bytes()?;
            let raw = parts.next()?;
            if raw.is_null() {
                return None;
            }
            let (id, fields) = own_entry(id, &raw.into_array(), bytes);
            Some(Entry {
                stream: stream.clone(),
                id,
                fields,
                deliveries: 0,
            })
        })
        .collect()
}

/// `t` as a command argument, sharing its bytes.
pub(crate) fn text_arg(t: &Text) -> Value {
    Value::String(t.to_str())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use fred::types::Resp3Frame;

    use super::parse_xread;

    fn blob(s: &'static [u8]) -> Resp3Frame {
        Resp3Frame::BlobString {
            data: Bytes::from_static(s),
            attributes: None,
        }
    }

    fn array(data: Vec<Resp3Frame>) -> Resp3Frame {
        Resp3Frame::Array {
            data,
            attributes: None,
        }
    }

    #[test]
    fn an_xreadgroup_reply_becomes_entries_in_order_without_deleted_ones() {
        let reply = array(vec![
            array(vec![
                blob(b"events:p:a"),
                array(vec![
                    array(vec![
                        blob(b"1-0"),
                        array(vec![blob(b"id"), blob(b"e1"), blob(b"data"), blob(b"\xff")]),
                    ]),
                    array(vec![blob(b"2-0"), Resp3Frame::Null]),
                    array(vec![blob(b"3-0"), array(vec![blob(b"id"), blob(b"e3")])]),
                ]),
            ]),
            array(vec![
                blob(b"events:p:b"),
                array(vec![array(vec![blob(b"4-0"), array(vec![])])]),
            ]),
        ]);
        let got: Vec<_> = parse_xread(reply)
            .into_iter()
            .map(|e| {
                let fields: Vec<String> =
                    e.fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                (e.stream.to_string(), e.id.to_string(), fields, e.deliveries)
            })
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            got,
            vec![
                (
                    "events:p:a".into(),
                    "1-0".into(),
                    s(&["id=e1", "data=\u{fffd}"]),
                    1
                ),
                ("events:p:a".into(), "3-0".into(), s(&["id=e3"]), 1),
                ("events:p:b".into(), "4-0".into(), s(&[]), 1),
            ]
        );
        assert!(parse_xread(Resp3Frame::Null).is_empty());
    }

    #[test]
    fn an_entry_owns_one_buffer_of_its_own_not_the_replys() {
        static ID: &[u8] = b"1-0";
        static VALUE: &[u8] = b"e1";
        let reply = array(vec![array(vec![
            blob(b"events:p:a"),
            array(vec![array(vec![
                blob(ID),
                array(vec![blob(b"ab"), blob(VALUE), blob(b"id"), blob(b"e2")]),
            ])]),
        ])]);
        let e = parse_xread(reply).pop().unwrap();
        // Copied out of the reply (which a slow handler would otherwise keep whole)...
        assert_ne!(e.id.as_ptr(), ID.as_ptr());
        assert_ne!(e.fields[0].1.as_ptr(), VALUE.as_ptr());
        // ...into one buffer: id, then each name and value, back to back.
        let base = e.id.as_ptr() as usize;
        assert_eq!(e.fields[0].0.as_ptr() as usize, base + 3);
        assert_eq!(e.fields[0].1.as_ptr() as usize, base + 5);
        assert_eq!((e.id.as_str(), &*e.fields[0].1), ("1-0", "e1"));
        // A name the worker knows is a constant: no slice of the entry's buffer.
        let name = e.fields[1].0.as_ptr() as usize;
        let own = base..e.fields[1].1.as_ptr() as usize;
        assert!(!own.contains(&name) && &*e.fields[1].0 == "id");
        assert_eq!(&*e.fields[1].1, "e2");
    }
}
