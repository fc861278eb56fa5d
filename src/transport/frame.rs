//! The wire format: `u32` big-endian length, then a version byte, a frame
//! type byte and the payload (the length counts those two bytes and the
//! payload).
//!
//! Streams carry:
//! - the first stream of a connection: `Hello` each way;
//! - an RPC: `Request` (RPC kind byte + body), answered by `Response`,
//!   `Failure` (the handler's message) or `Rejected` (our frame was bad);
//! - an upload: `UploadHeader` (RPC kind byte + header), `Chunk`s, `End`
//!   (the total byte count), answered like an RPC;
//! - a session: `Session` (RPC kind byte + header), then `Message`s each
//!   way, in order, until each side finishes its half; the handler may end
//!   its half with a `Failure` instead.
//!
//! The length is checked against the limit before anything is allocated,
//! so a peer cannot make us reserve more than one frame's worth per stream.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use quinn::{ReadError, ReadExactError, RecvStream, SendStream, WriteError};

/// Version of the frame layout.
pub const WIRE_VERSION: u8 = 1;
/// Version and type bytes, counted by the length prefix.
const TAG_BYTES: usize = 2;
/// Keeps `payload + TAG_BYTES` within the `u32` length prefix.
pub(super) const MAX_FRAME_LIMIT: usize = u32::MAX as usize - TAG_BYTES;
/// Cluster and node names in a Hello are length-prefixed by one byte.
pub(super) const MAX_NAME_BYTES: usize = 255;
/// Bound on a Hello frame, whatever `max_frame_bytes` says: the peer is not
/// authenticated as a node of ours until the Hello is checked.
pub(super) const HELLO_MAX_BYTES: usize = 4 + 2 * (1 + MAX_NAME_BYTES);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FrameType {
    Hello = 1,
    Request = 2,
    UploadHeader = 3,
    Chunk = 4,
    End = 5,
    Response = 6,
    Failure = 7,
    Rejected = 8,
    Session = 9,
    Message = 10,
}

impl FrameType {
    fn from_byte(b: u8) -> Option<FrameType> {
        Some(match b {
            1 => FrameType::Hello,
            2 => FrameType::Request,
            3 => FrameType::UploadHeader,
            4 => FrameType::Chunk,
            5 => FrameType::End,
            6 => FrameType::Response,
            7 => FrameType::Failure,
            8 => FrameType::Rejected,
            9 => FrameType::Session,
            10 => FrameType::Message,
            _ => return None,
        })
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            FrameType::Hello => "hello",
            FrameType::Request => "request",
            FrameType::UploadHeader => "upload header",
            FrameType::Chunk => "chunk",
            FrameType::End => "end",
            FrameType::Response => "response",
            FrameType::Failure => "failure",
            FrameType::Rejected => "rejected",
            FrameType::Session => "session",
            FrameType::Message => "message",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Frame {
    pub ty: FrameType,
    pub payload: Bytes,
}

impl Frame {
    /// Splits the RPC kind byte off a `Request`, `UploadHeader` or
    /// `Session` payload.
    pub(super) fn kind_and_body(&self) -> Result<(u8, Bytes), FrameError> {
        match self.payload.first() {
            Some(&kind) => Ok((kind, self.payload.slice(1..))),
            None => Err(FrameError::Malformed {
                what: self.ty.name(),
                why: "no RPC kind byte".into(),
            }),
        }
    }

    pub(super) fn unexpected(&self, expected: &'static str) -> FrameError {
        FrameError::Unexpected {
            expected,
            got: self.ty.name(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: u64, max: usize },
    #[error("stream ended inside a frame ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    #[error("frame length {0} is shorter than the frame header")]
    Short(u32),
    #[error("frame version {0}, this node speaks version {WIRE_VERSION}")]
    Version(u8),
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("expected {expected}, got a {got} frame")]
    Unexpected {
        expected: &'static str,
        got: &'static str,
    },
    #[error("stream ended before {0}")]
    Missing(&'static str),
    #[error("malformed {what} frame: {why}")]
    Malformed { what: &'static str, why: String },
    /// The peer read a bad frame from us and said so.
    #[error("the peer rejected our frame: {0}")]
    Rejected(String),
}

/// Why reading or writing frames on a stream failed.
#[derive(Debug)]
pub(super) enum WireError {
    Frame(FrameError),
    Read(ReadError),
    Write(WriteError),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Frame(e) => e.fmt(f),
            WireError::Read(e) => e.fmt(f),
            WireError::Write(e) => e.fmt(f),
        }
    }
}

impl From<FrameError> for WireError {
    fn from(e: FrameError) -> Self {
        WireError::Frame(e)
    }
}

/// Reads one frame; `Ok(None)` when the stream ends cleanly between frames.
pub(super) async fn read_frame(
    recv: &mut RecvStream,
    max: usize,
) -> Result<Option<Frame>, WireError> {
    let mut len_buf = [0u8; 4];
    match recv.read_exact(&mut len_buf).await {
        Ok(()) => {}
        Err(ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(ReadExactError::FinishedEarly(got)) => {
            return Err(FrameError::Truncated { got, expected: 4 }.into())
        }
        Err(ReadExactError::ReadError(e)) => return Err(WireError::Read(e)),
    }
    let len = check_len(u32::from_be_bytes(len_buf), max)?;
    // Sized by what arrives, not by what the prefix claims: a peer that
    // announces 64 MiB and sends ten bytes costs ten bytes (and a stall).
    let mut buf = BytesMut::with_capacity(len.min(FIRST_READ_BYTES));
    while buf.len() < len {
        match recv.read_chunk(len - buf.len(), true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                return Err(FrameError::Truncated {
                    got: buf.len(),
                    expected: len,
                }
                .into())
            }
            Err(e) => return Err(WireError::Read(e)),
        }
    }
    Ok(Some(decode(buf.freeze())?))
}

/// Takes note, without waiting, of the sender's end of stream when it has
/// already arrived behind the last frame (a request or an answer is sent
/// with its FIN in the same packet). quinn answers a receive stream dropped
/// before its end was read with a STOP_SENDING frame and a wake-up of the
/// connection's driver: two per RPC, for nothing.
pub(super) fn note_finished(recv: &mut RecvStream) {
    let mut cx = Context::from_waker(Waker::noop());
    let read = recv.read_chunk(1, true);
    let mut read = pin!(read);
    // Data after the last frame is the peer's mistake; the drop then stops
    // the stream as before. Pending (no FIN yet) leaves it to the drop too.
    let _ = read.as_mut().poll(&mut cx);
}

/// Buffer reserved for a frame before its bytes arrive; it grows with them.
const FIRST_READ_BYTES: usize = 64 * 1024;

/// Reads a frame that must be there.
pub(super) async fn expect_frame(
    recv: &mut RecvStream,
    max: usize,
    what: &'static str,
) -> Result<Frame, WireError> {
    read_frame(recv, max)
        .await?
        .ok_or(WireError::Frame(FrameError::Missing(what)))
}

/// Writes one frame whose payload is `prefix` followed by `body`, without
/// copying `body` (chunks and snapshot data can be large).
pub(super) async fn write_frame(
    send: &mut SendStream,
    ty: FrameType,
    prefix: &[u8],
    body: Bytes,
    max: usize,
) -> Result<(), WireError> {
    let head = encode_head(ty, prefix, body.len(), max)?;
    let mut parts = [head, body];
    send.write_all_chunks(&mut parts)
        .await
        .map_err(WireError::Write)
}

/// The length prefix, tags and `prefix` of a frame whose body follows.
fn encode_head(
    ty: FrameType,
    prefix: &[u8],
    body_len: usize,
    max: usize,
) -> Result<Bytes, FrameError> {
    let payload = prefix.len().saturating_add(body_len);
    let too_large = || FrameError::TooLarge {
        len: payload as u64,
        max,
    };
    if payload > max {
        return Err(too_large());
    }
    let len = payload
        .checked_add(TAG_BYTES)
        .and_then(|l| u32::try_from(l).ok())
        .ok_or_else(too_large)?;
    let mut head = BytesMut::with_capacity(4 + TAG_BYTES + prefix.len());
    head.put_u32(len);
    head.put_u8(WIRE_VERSION);
    head.put_u8(ty as u8);
    head.put_slice(prefix);
    Ok(head.freeze())
}

/// Validates a length prefix before any buffer is sized from it.
fn check_len(len: u32, max: usize) -> Result<usize, FrameError> {
    let payload = len
        .checked_sub(TAG_BYTES as u32)
        .ok_or(FrameError::Short(len))?;
    if u64::from(payload) > max as u64 {
        return Err(FrameError::TooLarge {
            len: u64::from(payload),
            max,
        });
    }
    // `payload <= max: usize`, so the whole frame fits a usize as well.
    Ok(len as usize)
}

/// Parses the bytes after the length prefix.
fn decode(buf: Bytes) -> Result<Frame, FrameError> {
    let (version, ty) = match buf.get(..TAG_BYTES) {
        Some(&[v, t]) => (v, t),
        _ => return Err(FrameError::Short(buf.len() as u32)),
    };
    if version != WIRE_VERSION {
        return Err(FrameError::Version(version));
    }
    let ty = FrameType::from_byte(ty).ok_or(FrameError::UnknownType(ty))?;
    Ok(Frame {
        ty,
        payload: buf.slice(TAG_BYTES..),
    })
}

/// The identity a node claims on a new connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hello {
    pub protocol: u32,
    pub cluster_name: String,
    pub node_name: String,
}

impl Hello {
    /// Names must be at most [`MAX_NAME_BYTES`] long (options are validated).
    pub(super) fn encode(&self) -> Result<Bytes, FrameError> {
        let mut out = BytesMut::with_capacity(HELLO_MAX_BYTES);
        out.put_u32(self.protocol);
        for name in [&self.cluster_name, &self.node_name] {
            let len = u8::try_from(name.len()).map_err(|_| FrameError::Malformed {
                what: "hello",
                why: format!("name of {} bytes is too long", name.len()),
            })?;
            out.put_u8(len);
            out.put_slice(name.as_bytes());
        }
        Ok(out.freeze())
    }

    pub(super) fn decode(payload: &[u8]) -> Result<Hello, FrameError> {
        let malformed = |why: &str| FrameError::Malformed {
            what: "hello",
            why: why.into(),
        };
        let (protocol, mut rest) = match payload.split_first_chunk::<4>() {
            Some((p, rest)) => (u32::from_be_bytes(*p), rest),
            None => return Err(malformed("shorter than its protocol number")),
        };
        let mut name = || -> Result<String, FrameError> {
            let (&len, tail) = rest.split_first().ok_or_else(|| malformed("truncated"))?;
            let len = usize::from(len);
            let bytes = tail.get(..len).ok_or_else(|| malformed("truncated name"))?;
            rest = &tail[len..];
            String::from_utf8(bytes.to_vec()).map_err(|_| malformed("name is not UTF-8"))
        };
        let cluster_name = name()?;
        let node_name = name()?;
        if !rest.is_empty() {
            return Err(malformed("trailing bytes"));
        }
        Ok(Hello {
            protocol,
            cluster_name,
            node_name,
        })
    }
}

/// Total byte count carried by an `End` frame: a cross-check that no chunk
/// went missing between the two ends.
pub(super) fn decode_end(payload: &[u8]) -> Result<u64, FrameError> {
    let bytes: [u8; 8] = payload.try_into().map_err(|_| FrameError::Malformed {
        what: "end",
        why: format!("{} bytes instead of 8", payload.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> Hello {
        Hello {
            protocol: 1,
            cluster_name: "mail-gw".into(),
            node_name: "node-a".into(),
        }
    }

    #[test]
    fn head_and_decode_round_trip() {
        let head = encode_head(FrameType::Request, &[7], 3, 100).unwrap();
        assert_eq!(&head[..], &[0, 0, 0, 6, WIRE_VERSION, 2, 7]);
        let len = check_len(u32::from_be_bytes([0, 0, 0, 6]), 100).unwrap();
        assert_eq!(len, 6);
        let frame = decode(Bytes::from_static(&[WIRE_VERSION, 2, 7, b'a', b'b', b'c'])).unwrap();
        assert_eq!(frame.ty, FrameType::Request);
        assert_eq!(
            frame.kind_and_body().unwrap(),
            (7, Bytes::from_static(b"abc"))
        );
        let empty = decode(Bytes::from_static(&[WIRE_VERSION, 2])).unwrap();
        assert!(matches!(
            empty.kind_and_body(),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        assert_eq!(check_len(0, 100), Err(FrameError::Short(0)));
        assert_eq!(check_len(1, 100), Err(FrameError::Short(1)));
        assert_eq!(check_len(2, 100), Ok(2));
        assert_eq!(check_len(102, 100), Ok(102));
        assert_eq!(
            check_len(103, 100),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
        assert_eq!(check_len(u32::MAX, MAX_FRAME_LIMIT), Ok(u32::MAX as usize));
        assert!(matches!(
            check_len(u32::MAX, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(
            encode_head(FrameType::Chunk, &[1], 100, 100),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        );
        assert!(encode_head(FrameType::Chunk, &[], usize::MAX, usize::MAX).is_err());
    }

    #[test]
    fn bad_tags_are_errors() {
        assert_eq!(
            decode(Bytes::from_static(&[9, 2])),
            Err(FrameError::Version(9))
        );
        assert_eq!(
            decode(Bytes::from_static(&[WIRE_VERSION, 0])),
            Err(FrameError::UnknownType(0))
        );
        assert_eq!(
            decode(Bytes::from_static(&[WIRE_VERSION, 200, 1])),
            Err(FrameError::UnknownType(200))
        );
        assert_eq!(decode(Bytes::new()), Err(FrameError::Short(0)));
        for b in 1..=8 {
            let ty = FrameType::from_byte(b).unwrap();
            assert_eq!(ty as u8, b);
        }
    }

    #[test]
    fn hello_round_trips_and_every_truncation_fails() {
        let h = hello();
        let bytes = h.encode().unwrap();
        assert!(bytes.len() <= HELLO_MAX_BYTES);
        assert_eq!(Hello::decode(&bytes).unwrap(), h);
        for cut in 0..bytes.len() {
            assert!(Hello::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.to_vec();
        long.push(0);
        assert!(Hello::decode(&long).is_err());
        let mut bad_utf8 = bytes.to_vec();
        // First byte of the cluster name.
        bad_utf8[5] = 0xff;
        assert!(Hello::decode(&bad_utf8).is_err());

        let too_long = Hello {
            node_name: "n".repeat(256),
            ..hello()
        };
        assert!(too_long.encode().is_err());
        let longest = Hello {
            cluster_name: "c".repeat(MAX_NAME_BYTES),
            node_name: "n".repeat(MAX_NAME_BYTES),
            ..hello()
        };
        assert_eq!(longest.encode().unwrap().len(), HELLO_MAX_BYTES);
    }

    #[test]
    fn end_frame_carries_a_total() {
        assert_eq!(decode_end(&42u64.to_be_bytes()), Ok(42));
        assert!(decode_end(&[0; 7]).is_err());
        assert!(decode_end(&[0; 9]).is_err());
    }

    mod hostile {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            /// The bytes after a length prefix, as a peer may send them.
            #[test]
            fn any_frame_body_decodes_or_errs(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
                match decode(Bytes::from(bytes.clone())) {
                    Ok(frame) => {
                        prop_assert_eq!(bytes[0], WIRE_VERSION);
                        prop_assert_eq!(frame.ty as u8, bytes[1]);
                        prop_assert_eq!(&frame.payload[..], &bytes[2..]);
                        let _ = frame.kind_and_body();
                    }
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
                let _ = Hello::decode(&bytes);
                let _ = decode_end(&bytes);
            }

            /// Any length prefix is checked against the limit before a
            /// buffer is sized from it.
            #[test]
            fn any_length_prefix_is_bounded(len in any::<u32>(), max in 1024usize..(64 << 20)) {
                match check_len(len, max) {
                    Ok(n) => prop_assert!(n <= max + TAG_BYTES && n >= TAG_BYTES),
                    Err(FrameError::TooLarge { len: l, max: m }) => {
                        prop_assert!(l > m as u64);
                        prop_assert_eq!(m, max);
                    }
                    Err(FrameError::Short(l)) => prop_assert!(l < TAG_BYTES as u32),
                    Err(other) => prop_assert!(false, "unexpected {other}"),
                }
            }

            /// Hellos with any names round-trip; damaged ones never panic
            /// and never decode to names longer than the limit.
            #[test]
            fn hellos_round_trip_and_damage_is_safe(
                protocol in any::<u32>(),
                cluster in "\\PC{0,40}",
                node in "\\PC{0,40}",
                flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..4),
            ) {
                let h = Hello { protocol, cluster_name: cluster, node_name: node };
                match h.encode() {
                    Ok(bytes) => {
                        prop_assert_eq!(Hello::decode(&bytes).unwrap(), h);
                        let mut b = bytes.to_vec();
                        for (at, mask) in flips {
                            let i = at.index(b.len());
                            b[i] ^= mask;
                        }
                        if let Ok(d) = Hello::decode(&b) {
                            prop_assert!(d.cluster_name.len() <= MAX_NAME_BYTES);
                            prop_assert!(d.node_name.len() <= MAX_NAME_BYTES);
                        }
                    }
                    Err(_) => prop_assert!(h.cluster_name.len() > MAX_NAME_BYTES || h.node_name.len() > MAX_NAME_BYTES),
                }
            }
        }
    }
}
