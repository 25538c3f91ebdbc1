//! Reading a request body: hashed once as it arrives, memory bounded by the body limit
//! whatever the client's chunking, and cut off when it makes no progress.
//!
//! - With `Content-Length` (Prometheus always sends it), the body is copied, as it is hashed,
//!   into blocks of [`BLOCK`] bytes, the last one cut to size, and hyper's read buffer is
//!   released at once and reused for the next read: the body costs its own size whatever the
//!   chunking, and every allocation is one block (a fresh body-sized allocation per request
//!   costs page faults, and allocators keep such sizes poorly).
//! - Without it (chunked encoding), chunks of at least [`SMALL`] bytes are kept as received
//!   (no copy; hyper writes them upstream with vectored I/O), and smaller ones are copied into
//!   blocks of [`BLOCK`] bytes: a body sent one byte per chunk costs its own size plus one
//!   block, not a buffer handle per byte (which pinned 36 times the body).
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

/// Chunks smaller than this are coalesced (chunked bodies).
pub const SMALL: usize = 16 * 1024;

/// The size of the blocks bodies are copied into.
pub const BLOCK: usize = 64 * 1024;

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
    // With a declared length, every byte is copied into blocks, the last one cut to size.
    let exact = declared.filter(|&n| n <= limits.max as u64);
    let mut blocks = Blocks {
        current: BytesMut::new(),
        left: exact,
    };
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
        if exact.is_none() && data.len() >= SMALL {
            blocks.flush(&mut out);
            out.push(data);
        } else {
            blocks.copy(&data, &mut out);
        }
        // `data` (and hyper's buffer behind it, unless kept) is released here.
    }
    blocks.flush(&mut out);
    Ok((out, hex::encode(hasher.finalize())))
}

/// Where copied bytes go: blocks of [`BLOCK`] bytes, each frozen and handed on when full.
struct Blocks {
    current: BytesMut,
    /// What is left to copy of a body of declared length: its last block is cut to size.
    left: Option<u64>,
}

impl Blocks {
    fn copy(&mut self, mut data: &[u8], out: &mut Chunks) {
        while !data.is_empty() {
            if self.current.len() == self.current.capacity() {
                self.flush(out);
                let size = self
                    .left
                    .map_or(BLOCK, |left| (left as usize).clamp(1, BLOCK));
                self.current = BytesMut::with_capacity(size);
            }
            let n = data.len().min(self.current.capacity() - self.current.len());
            self.current.extend_from_slice(&data[..n]);
            if let Some(left) = &mut self.left {
                *left = left.saturating_sub(n as u64);
            }
            data = &data[n..];
        }
    }

    fn flush(&mut self, out: &mut Chunks) {
        if !self.current.is_empty() {
            out.push(self.current.split().freeze());
        }
    }
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
    async fn a_declared_body_fills_blocks_whatever_its_chunking() {
        let mut chunks: Vec<Bytes> = (0..3000).map(|i| Bytes::from(vec![i as u8])).collect();
        chunks.push(Bytes::from(vec![7u8; BLOCK]));
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        let (out, sha) = read(body(chunks), Some(all.len() as u64), limits())
            .await
            .unwrap();
        assert_eq!(out.len(), all.len());
        assert_eq!(sha, hex::encode(Sha256::digest(&all)));
        // One full block and the rest, in a second block cut to size.
        assert_eq!(out.count(), 2);
    }

    #[tokio::test]
    async fn small_chunks_fill_blocks_of_their_own_size() {
        let chunks: Vec<Bytes> = (0..BLOCK * 2 + 10)
            .map(|i| Bytes::from(vec![i as u8]))
            .collect();
        let (out, _) = read(body(chunks), None, limits()).await.unwrap();
        assert_eq!(out.len(), BLOCK * 2 + 10);
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
