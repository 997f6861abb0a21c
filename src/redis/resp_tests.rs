use proptest::prelude::*;

use super::*;

/// One stream's part of a reply: its key and its entries (`None` fields: deleted).
type StreamPart<'a> = (&'a [u8], Vec<(&'a [u8], Option<Vec<&'a [u8]>>)>);

fn bulk(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
    out.extend_from_slice(b);
    out.extend_from_slice(b"\r\n");
}

/// The bytes Redis sends for an XREADGROUP reply of `streams`.
fn reply(streams: &[StreamPart]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", streams.len()).into_bytes();
    for (key, entries) in streams {
        out.extend_from_slice(b"*2\r\n");
        bulk(&mut out, key);
        out.extend_from_slice(format!("*{}\r\n", entries.len()).as_bytes());
        for (id, fields) in entries {
            out.extend_from_slice(b"*2\r\n");
            bulk(&mut out, id);
            match fields {
                None => out.extend_from_slice(b"*-1\r\n"),
                Some(fields) => {
                    out.extend_from_slice(format!("*{}\r\n", fields.len()).as_bytes());
                    for f in fields {
                        bulk(&mut out, f);
                    }
                }
            }
        }
    }
    out
}

/// Reads `bytes`, which must be exactly one whole reply.
fn read_whole(bytes: &[u8]) -> Result<ReadReply, ProtocolError> {
    let (reply, len) = XReadReader::default().read(bytes)?.expect("a whole reply");
    assert_eq!(len, bytes.len());
    Ok(reply)
}

fn entries(bytes: &[u8]) -> Vec<Entry> {
    match read_whole(bytes).unwrap() {
        ReadReply::Entries(e) => e,
        ReadReply::Error(e) => panic!("error reply {e}"),
    }
}

fn shown(e: &Entry) -> (String, String, Vec<(String, String)>) {
    let fields = e.fields.iter();
    let fields = fields.map(|(k, v)| (k.as_str().to_string(), v.as_str().to_string()));
    (
        e.stream.as_str().to_string(),
        e.id.as_str().to_string(),
        fields.collect(),
    )
}

#[test]
fn a_command_is_an_array_of_bulk_strings() {
    let mut out = Vec::new();
    encode_command(&mut out, &["XREADGROUP", "GROUP", "", "é"]);
    assert_eq!(
        out,
        b"*4\r\n$10\r\nXREADGROUP\r\n$5\r\nGROUP\r\n$0\r\n\r\n$2\r\n\xc3\xa9\r\n"
    );
    // Lengths of every number of digits, as `format!` writes them.
    for len in [9, 10, 99, 100, 12345] {
        let (mut out, arg) = (Vec::new(), "x".repeat(len));
        encode_command(&mut out, &[arg.as_str()]);
        assert_eq!(out, format!("*1\r\n${len}\r\n{arg}\r\n").into_bytes());
    }
}

#[test]
fn a_reply_becomes_entries_in_order_without_deleted_ones() {
    let bytes = reply(&[
        (
            b"events:t:a",
            vec![
                (b"1-0", Some(vec![b"type", b"a", b"data", b"{}"])),
                (b"2-0", None),
                (b"3-0", Some(vec![])),
            ],
        ),
        (b"events:t:b", vec![(b"4-1", Some(vec![b"k", b"v\r\n"]))]),
    ]);
    let got: Vec<_> = entries(&bytes).iter().map(shown).collect();
    let s = |v: &str| v.to_string();
    assert_eq!(
        got,
        vec![
            (
                s("events:t:a"),
                s("1-0"),
                vec![(s("type"), s("a")), (s("data"), s("{}"))]
            ),
            (s("events:t:a"), s("3-0"), vec![]),
            (s("events:t:b"), s("4-1"), vec![(s("k"), s("v\r\n"))]),
        ]
    );
    assert!(entries(&bytes).iter().all(|e| e.deliveries == 1));
}

#[test]
fn invalid_utf8_is_replaced_as_fred_replies_were() {
    let bytes = reply(&[(b"s", vec![(b"1-0", Some(vec![b"data", b"a\xffb"]))])]);
    assert_eq!(entries(&bytes)[0].fields[0].1.as_str(), "a\u{fffd}b");
}

#[test]
fn a_block_timeout_and_an_error_reply_are_told_apart() {
    assert!(entries(b"*-1\r\n").is_empty());
    assert!(entries(b"*0\r\n").is_empty());
    match read_whole(b"-NOGROUP No such key 'k' or consumer group 'g'\r\n").unwrap() {
        ReadReply::Error(e) => assert_eq!(e, "NOGROUP No such key 'k' or consumer group 'g'"),
        ReadReply::Entries(e) => panic!("entries {e:?}"),
    }
}

#[test]
fn a_reply_of_another_shape_is_a_protocol_error() {
    for bad in [
        &b":5\r\n"[..],
        b"*1\r\n$1\r\nk\r\n",
        b"*1\r\n*2\r\n$1\r\nk\r\n$1\r\nx\r\n",
        b"*1\r\n*2\r\n$1\r\nk\r\n*1\r\n*2\r\n:1\r\n*0\r\n",
        b"*1\r\n*2\r\n$1\r\nk\r\n*1\r\n*3\r\n$1\r\n1\r\n*0\r\n",
        b"*1\r\n*2\r\n$1\r\nk\r\n*1\r\n*2\r\n$1\r\n1XX*0\r\n",
    ] {
        assert!(
            XReadReader::default().read(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn the_end_is_found_only_when_the_whole_reply_is_there() {
    let bytes = reply(&[(
        b"events:t:a",
        vec![
            (b"1-0", Some(vec![b"type", b"a", b"data", b"{\"x\":1}"])),
            (b"2-0", None),
        ],
    )]);
    let mut with_next = bytes.clone();
    with_next.extend_from_slice(b"+OK\r\n");
    // Byte by byte, as a slow socket would deliver it: the same entries as at once.
    let mut reader = XReadReader::default();
    for len in 0..bytes.len() {
        assert!(
            reader.read(&with_next[..len]).unwrap().is_none(),
            "at {len}"
        );
    }
    let Some((ReadReply::Entries(read), len)) = reader.read(&with_next).unwrap() else {
        panic!("not a whole reply of entries");
    };
    assert_eq!(len, bytes.len());
    let once: Vec<_> = entries(&bytes).iter().map(shown).collect();
    assert_eq!(read.iter().map(shown).collect::<Vec<_>>(), once);
    // The next reply, a one-line one, ends 5 bytes later.
    let next = &with_next[bytes.len()..];
    assert_eq!(line_reply(next).unwrap(), Some((Ok(()), 5)));
    assert_eq!(line_reply(&next[..4]).unwrap(), None);
    assert_eq!(
        line_reply(b"-ERR x\r\n").unwrap(),
        Some((Err("ERR x".to_string()), 8))
    );
    assert!(line_reply(b"*0\r\n").is_err());
    // An integer reply (XACK's count) is a one-line reply too.
    assert_eq!(line_reply(b":128\r\n").unwrap(), Some((Ok(()), 6)));
}

#[test]
fn bytes_that_are_not_resp_are_refused() {
    for bad in [
        &b"?x\r\n"[..],
        b"*1x\r\n",
        b"$3\r\nabcde\r\n",
        b"$99999999999999999999\r\n",
        b"*-\r\n",
        b"+OK\rX",
    ] {
        let shown = String::from_utf8_lossy(bad);
        assert!(line_reply(bad).is_err(), "{shown:?}");
        assert!(XReadReader::default().read(bad).is_err(), "{shown:?}");
    }
}

fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        Just(b"\r\n".to_vec()),
        Just(b"*-1\r\n".to_vec()),
        "[a-z0-9-]{0,12}".prop_map(String::into_bytes),
    ]
}

type Generated = Vec<(Vec<u8>, Vec<(Vec<u8>, Option<Vec<Vec<u8>>>)>)>;

fn generated() -> impl Strategy<Value = Generated> {
    let entry = (
        piece(),
        proptest::option::weighted(0.9, proptest::collection::vec(piece(), 0..6)),
    );
    proptest::collection::vec((piece(), proptest::collection::vec(entry, 0..6)), 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Any reply, cut anywhere into two socket reads, ends exactly where it ends and reads
    /// back as the entries it holds (as fred's path reads them: lossy UTF-8, odd last field
    /// dropped, deleted entries left out).
    #[test]
    fn any_reply_split_anywhere_reads_back(streams in generated(), cut in any::<prop::sample::Index>()) {
        let parts: Vec<StreamPart> = streams
            .iter()
            .map(|(k, es)| {
                let es = es.iter().map(|(id, f)| {
                    (id.as_slice(), f.as_ref().map(|f| f.iter().map(Vec::as_slice).collect()))
                });
                (k.as_slice(), es.collect())
            })
            .collect();
        let bytes = reply(&parts);
        let cut = cut.index(bytes.len());
        let mut reader = XReadReader::default();
        prop_assert!(reader.read(&bytes[..cut]).unwrap().is_none());
        let Some((ReadReply::Entries(read), len)) = reader.read(&bytes).unwrap() else {
            panic!("not a whole reply of entries");
        };
        prop_assert_eq!(len, bytes.len());
        let got: Vec<_> = read.iter().map(shown).collect();
        prop_assert_eq!(&got, &entries(&bytes).iter().map(shown).collect::<Vec<_>>());
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let want: Vec<_> = streams
            .iter()
            .flat_map(|(k, es)| {
                es.iter().filter_map(move |(id, f)| {
                    let pairs = f.as_ref()?.chunks_exact(2);
                    let fields = pairs.map(|p| (lossy(&p[0]), lossy(&p[1]))).collect();
                    Some((lossy(k), lossy(id), fields))
                })
            })
            .collect();
        prop_assert_eq!(got, want);
    }

    /// Arbitrary bytes never panic the scanner or the parser.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = line_reply(&bytes);
        let _ = XReadReader::default().read(&bytes);
    }
}

#[test]
fn an_entry_owns_one_copy_of_its_span_not_the_replys_buffer() {
    // `ab`: a field name the worker does not know (a known one is its constant, below).
    let bytes = reply(&[(b"s", vec![(b"1-0", Some(vec![b"ab", b"e1", b"id", b"e2"]))])]);
    let e = entries(&bytes).pop().unwrap();
    let reply_at = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
    // Copied out of the reply (which a slow handler would otherwise keep whole)...
    assert!(!reply_at.contains(&(e.id.as_ptr() as usize)));
    // ...into one buffer, the entry's span as in the reply: `1-0\r\n*4\r\n$2\r\nab\r\n$2\r\ne1...`.
    let base = e.id.as_ptr() as usize;
    assert_eq!(e.fields[0].0.as_ptr() as usize, base + 3 + 2 + 4 + 4);
    assert_eq!(
        e.fields[0].1.as_ptr() as usize,
        base + 3 + 2 + 4 + 4 + 2 + 2 + 4
    );
    assert_eq!((e.id.as_str(), &*e.fields[0].1), ("1-0", "e1"));
    // A name the worker knows is a constant: no slice of the entry's buffer.
    let name = e.fields[1].0.as_ptr() as usize;
    let own = base..e.fields[1].1.as_ptr() as usize;
    assert!(!own.contains(&name) && &*e.fields[1].0 == "id");
    assert_eq!(&*e.fields[1].1, "e2");
}
