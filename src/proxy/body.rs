//! Reading a request body: hashed once as it arrives, memory bounded by the body limit
//! whatever the client's chunking, and cut off when it makes no progress.
//!
//! - Chunks of at least [`SMALL`] bytes are kept as received (no copy; hyper writes them
//!   upstream with vectored I/O). Smaller ones are copied into one buffer, sized from
//!   `Content-Length` when given, and released: a body sent one byte per chunk costs its own
//!   size, not a buffer handle per byte (which pinned 36 times the body).
//! - A body must keep coming: no frame for [`Limits::stall`], or less than
//!   [`Limits::min_rate`] bytes per second on average once [`Limits::grace`] has passed, or
//!   not finished within [`Limits::total`], is cut off, so a client trickling bytes cannot
//!   hold a body slot for long.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::chunks::Chunks;

/// Time allowed before the minimum rate applies (connection set-up, a first write).
pub const GRACE: Duration = Duration::from_secs(2);

/// Chunks smaller than this are coalesced.
pub const SMALL: usize = 16 * 1024;

/// How the body must arrive.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest body, in bytes.
    pub max: usize,
    /// The whole body must arrive within this.
    pub total: Duration,
    /// Longest wait for the next piece of the body.
    pub stall: Duration,
    /// Average bytes per second required once `grace` has passed.
    pub min_rate: u64,
    pub grace: Duration,
}

/// Why a body was not read.
#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    TooLarge,
    Read,
    /// Too slow: no progress, under the minimum rate, or over the total time.
    Slow,
}

/// Reads the whole body: its chunks and the hex SHA-256 of its bytes.
pub async fn read<B>(
    mut body: B,
    declared: Option<u64>,
    limits: Limits,
) -> Result<(Chunks, String), Error>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    let started = Instant::now();
    let total_deadline = started + limits.total;
    let mut hasher = Sha256::new();
    let mut out = Chunks::default();
    let mut small = BytesMut::new();
    let small_capacity = declared
        .map(|n| (n as usize).min(limits.max))
        .unwrap_or(SMALL * 4)
        .max(1);
    let mut received: u64 = 0;
    loop {
        // The latest moment the next bytes may come: no stall, the average rate kept, the
        // total time not exceeded.
        let rate_deadline = if limits.min_rate == 0 {
            total_deadline
        } else {
            started
                + limits.grace
                + Duration::from_secs_f64((received + 1) as f64 / limits.min_rate as f64)
        };
        let deadline = (Instant::now() + limits.stall)
            .min(rate_deadline.max(started + limits.grace))
            .min(total_deadline);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(Error::Slow),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(Error::Read),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received += data.len() as u64;
        if received > limits.max as u64 {
            return Err(Error::TooLarge);
        }
        hasher.update(&data);
        if data.len() >= SMALL {
            if !small.is_empty() {
                out.push(small.split().freeze());
            }
            out.push(data);
        } else {
            if small.capacity() == 0 {
                small.reserve(small_capacity.min(limits.max));
            }
            small.extend_from_slice(&data);
            // `data` (and hyper's buffer behind it) is released here.
        }
    }
    if !small.is_empty() {
        out.push(small.freeze());
    }
    Ok((out, hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    fn limits() -> Limits {
        Limits {
            max: 1 << 20,
            total: Duration::from_secs(30),
            stall: Duration::from_secs(5),
            min_rate: 1024,
            grace: Duration::from_secs(2),
        }
    }

    type Frame = Result<hyper::body::Frame<Bytes>, std::convert::Infallible>;
    type Frames = StreamBody<futures::stream::Iter<std::vec::IntoIter<Frame>>>;

    fn body(chunks: Vec<Bytes>) -> Frames {
        let frames: Vec<Frame> = chunks
            .into_iter()
            .map(|c| Ok(hyper::body::Frame::data(c)))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn one_byte_chunks_are_coalesced_and_large_ones_kept() {
        let mut chunks: Vec<Bytes> = (0..3000).map(|i| Bytes::from(vec![i as u8])).collect();
        chunks.push(Bytes::from(vec![7u8; SMALL]));
        chunks.push(Bytes::from_static(b"tail"));
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        let (out, sha) = read(body(chunks), None, limits()).await.unwrap();
        assert_eq!(out.len(), all.len());
        assert_eq!(sha, hex::encode(Sha256::digest(&all)));
        // 3000 bytes in one buffer, the large chunk as is, the tail in another.
        assert_eq!(out.count(), 3);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let mut l = limits();
        l.max = 10;
        let r = read(body(vec![Bytes::from_static(b"0123456789A")]), None, l).await;
        assert_eq!(r.unwrap_err(), Error::TooLarge);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_under_the_minimum_rate_is_cut_off() {
        // One byte a second: progress every time, never a stall, but under 1 KiB/s.
        let stream = futures::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(
                    b"x",
                ))),
                n + 1,
            ))
        });
        let started = Instant::now();
        let r = read(StreamBody::new(Box::pin(stream)), None, limits()).await;
        assert_eq!(r.unwrap_err(), Error::Slow);
        assert!(
            started.elapsed() <= Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }
}
