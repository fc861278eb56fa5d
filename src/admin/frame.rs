//! Length-delimited JSON frames: a 4-byte big-endian length, then the JSON.
//!
//! The length is checked against [`MAX_FRAME`] before anything is allocated,
//! so a peer cannot make either side reserve memory it chose.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame body either side accepts or sends (1 MiB); admin messages
/// are a few hundred bytes, so anything near this is a confused peer.
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {MAX_FRAME} bytes")]
    TooLarge { len: usize },
    #[error("truncated frame: connection closed after {got} of {expected} bytes")]
    Truncated { expected: usize, got: usize },
    #[error("connection closed before an answer arrived")]
    Closed,
    #[error("malformed JSON in frame: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame body. `Ok(None)` is a clean end of stream between frames
/// (the peer is done); an end of stream inside a frame is `Truncated`.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, FrameError> {
    let mut len_buf = [0u8; 4];
    let mut got = 0;
    while got < len_buf.len() {
        let n = r.read(&mut len_buf[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(FrameError::Truncated { expected: 4, got });
        }
        got += n;
    }
    let len = u32::from_be_bytes(len_buf) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    let mut body = Vec::with_capacity(len);
    // `len` is bounded by MAX_FRAME above, so this cast cannot truncate.
    r.take(len as u64).read_to_end(&mut body).await?;
    if body.len() < len {
        return Err(FrameError::Truncated {
            expected: len,
            got: body.len(),
        });
    }
    Ok(Some(body))
}

/// Writes one frame body, refusing bodies the other side would refuse.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<(), FrameError> {
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge { len: body.len() });
    }
    // Bounded by MAX_FRAME (< u32::MAX) above.
    let len = (body.len() as u32).to_be_bytes();
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len);
    buf.extend_from_slice(body);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Serializes `msg` and writes it as one frame.
pub async fn write_message<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), FrameError> {
    let body = serde_json::to_vec(msg)?;
    write_frame(w, &body).await
}

/// Reads one frame and parses it as `T`; a clean end of stream is `Closed`.
pub async fn read_message<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
) -> Result<T, FrameError> {
    let body = read_frame(r).await?.ok_or(FrameError::Closed)?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(bytes: &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        let mut r = bytes;
        read_frame(&mut r).await
    }

    #[tokio::test]
    async fn round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"{\"a\":1}").await.unwrap();
        assert_eq!(&buf[..4], &[0, 0, 0, 7]);
        assert_eq!(read_all(&buf).await.unwrap().unwrap(), b"{\"a\":1}");
    }

    #[tokio::test]
    async fn two_frames_in_a_row() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"one").await.unwrap();
        write_frame(&mut buf, b"").await.unwrap();
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).await.unwrap().unwrap(), b"one");
        assert_eq!(read_frame(&mut r).await.unwrap().unwrap(), b"");
        assert!(read_frame(&mut r).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn clean_eof_is_none() {
        assert!(read_all(&[]).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_length_and_body() {
        assert!(matches!(
            read_all(&[0, 0]).await,
            Err(FrameError::Truncated {
                expected: 4,
                got: 2
            })
        ));
        assert!(matches!(
            read_all(&[0, 0, 0, 5, b'a']).await,
            Err(FrameError::Truncated {
                expected: 5,
                got: 1
            })
        ));
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_reading() {
        let len = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(
            matches!(read_all(&len).await, Err(FrameError::TooLarge { len }) if len == MAX_FRAME + 1)
        );
        let max = u32::MAX.to_be_bytes();
        assert!(matches!(
            read_all(&max).await,
            Err(FrameError::TooLarge { .. })
        ));
        // Exactly the limit is allowed.
        let mut buf = Vec::new();
        write_frame(&mut buf, &vec![b' '; MAX_FRAME]).await.unwrap();
        assert_eq!(read_all(&buf).await.unwrap().unwrap().len(), MAX_FRAME);
    }

    #[tokio::test]
    async fn oversized_body_is_not_written() {
        let mut buf = Vec::new();
        let err = write_frame(&mut buf, &vec![0; MAX_FRAME + 1])
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
        assert!(buf.is_empty());
    }

    #[tokio::test]
    async fn messages_and_bad_json() {
        let mut buf = Vec::new();
        write_message(&mut buf, &vec![1, 2, 3]).await.unwrap();
        let mut r = &buf[..];
        let v: Vec<i32> = read_message(&mut r).await.unwrap();
        assert_eq!(v, [1, 2, 3]);
        assert!(matches!(
            read_message::<_, Vec<i32>>(&mut r).await,
            Err(FrameError::Closed)
        ));

        let mut buf = Vec::new();
        write_frame(&mut buf, b"{not json").await.unwrap();
        let mut r = &buf[..];
        assert!(matches!(
            read_message::<_, Vec<i32>>(&mut r).await,
            Err(FrameError::Json(_))
        ));
    }

    mod hostile {
        use proptest::prelude::*;

        use super::*;
        use crate::admin::Request;

        fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(f)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1000))]

            /// Whatever a client writes: a frame, a clean end, or an error;
            /// never a body longer than the limit or than what was sent.
            #[test]
            fn any_bytes_read_as_a_frame_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
                let mut r = &bytes[..];
                match block_on(read_frame(&mut r)) {
                    Ok(Some(body)) => {
                        prop_assert!(body.len() <= MAX_FRAME);
                        prop_assert_eq!(&body[..], &bytes[4..4 + body.len()]);
                    }
                    Ok(None) => prop_assert!(bytes.is_empty()),
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
                let mut r = &bytes[..];
                let _ = block_on(read_message::<_, Request>(&mut r));
            }

            /// Length prefixes up to u32::MAX with short bodies: refused or
            /// truncated, without reserving what the prefix claims.
            #[test]
            fn claimed_lengths_are_checked(len in any::<u32>(), body in prop::collection::vec(any::<u8>(), 0..64)) {
                let mut bytes = len.to_be_bytes().to_vec();
                bytes.extend_from_slice(&body);
                let mut r = &bytes[..];
                match block_on(read_frame(&mut r)) {
                    Ok(Some(b)) => prop_assert_eq!(b.len(), len as usize),
                    Ok(None) => prop_assert!(false, "a length prefix was read"),
                    Err(FrameError::TooLarge { len: l }) => prop_assert!(l > MAX_FRAME),
                    Err(FrameError::Truncated { expected, got }) => prop_assert!(got < expected),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }

            /// JSON requests with any shape never panic the decoder.
            #[test]
            fn arbitrary_json_requests_never_panic(text in "\\{\"version\": ?[0-9]{1,3}, ?\"command\": ?[\\PC]{0,60}\\}") {
                let mut buf = Vec::new();
                block_on(write_frame(&mut buf, text.as_bytes())).unwrap();
                let mut r = &buf[..];
                let _ = block_on(read_message::<_, Request>(&mut r));
            }
        }
    }
}
