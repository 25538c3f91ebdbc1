//! A request body made of the chunks exactly as they arrived: forwarding them costs no copy
//! (hyper writes them with vectored I/O), and cloning it for a retry costs a few pointers.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

#[derive(Clone, Debug, Default)]
pub struct Chunks {
    chunks: VecDeque<Bytes>,
    len: u64,
}

impl Chunks {
    pub fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len() as u64;
        self.chunks.push_back(chunk);
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many chunks it holds.
    pub fn count(&self) -> usize {
        self.chunks.len()
    }
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = self.chunks.pop_front();
        if let Some(chunk) = &next {
            self.len -= chunk.len() as u64;
        }
        Poll::Ready(next.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}
