//! Our HTTP/1.1 server's parser (`proxy/src/h1/parse.rs`): request heads, their framing and
//! chunked bodies, from any bytes, fed in any split.
//!
//! Nothing may panic, and what is promised holds: a head parsed whole is parsed the same when
//! its bytes come in two reads; a partial head takes nothing off the buffer (a refused one
//! ends the connection); framing is one of the three, never both Content-Length and chunked;
//! the chunk decoder never yields more bytes than it was given and, once done, stays done.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stacklab_proxy::h1::parse::{parse_head, Chunked, Decoded, Framing};

fuzz_target!(|input: (&[u8], u16, &[u8])| {
    let (bytes, split, body) = input;
    let max = 16 * 1024;
    let mut whole = BytesMut::from(bytes);
    let first = parse_head(&mut whole, max, 100);
    match &first {
        Ok(Some(head)) => {
            assert!(bytes.len() - whole.len() <= max);
            let te = head.parts.headers.contains_key(http::header::TRANSFER_ENCODING);
            let cl = head.parts.headers.contains_key(http::header::CONTENT_LENGTH);
            assert!(!(te && cl), "both framings were accepted");
            if head.framing == Framing::Chunked {
                assert!(te);
            }
            // The same head in two reads.
            let at = usize::from(split) % (bytes.len() + 1);
            let mut buf = BytesMut::from(&bytes[..at]);
            let again = match parse_head(&mut buf, max, 100) {
                Ok(Some(h)) => {
                    // The head was whole in the first read; the rest follows it.
                    buf.extend_from_slice(&bytes[at..]);
                    h
                }
                Ok(None) => {
                    buf.extend_from_slice(&bytes[at..]);
                    parse_head(&mut buf, max, 100)
                        .expect("refused when split")
                        .expect("whole when all is there")
                }
                Err(e) => panic!("refused when split: {e}"),
            };
            assert_eq!(again.parts.method, head.parts.method);
            assert_eq!(again.parts.uri, head.parts.uri);
            assert_eq!(again.parts.headers, head.parts.headers);
            assert_eq!(again.framing, head.framing);
            assert_eq!(buf.len(), whole.len());
        }
        Ok(None) => assert_eq!(whole.len(), bytes.len()),
        // A refused head ends the connection (400, close): what is left is never read.
        Err(_) => assert!(whole.len() <= bytes.len()),
    }

    let mut d = Chunked::default();
    let mut buf = BytesMut::new();
    let mut out = 0usize;
    let step = usize::from(split % 64) + 1;
    'feed: for piece in body.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match d.decode(&mut buf) {
                Ok(Decoded::Data(b)) => {
                    assert!(!b.is_empty());
                    out += b.len();
                }
                Ok(Decoded::End) => {
                    assert!(d.done());
                    break 'feed;
                }
                Ok(Decoded::NeedMore) => break,
                Err(_) => break 'feed,
            }
        }
    }
    assert!(out <= body.len());
});
