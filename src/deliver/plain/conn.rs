//! One HTTP/1.1 connection of the lean client, driven by the attempt that
//! holds it: the request written with one vectored write, the answer's
//! head and body read into the connection's own buffer, no task and no
//! channel in between.
//!
//! Owns a connection's socket and buffers; which connection a request
//! gets, and for how long it stays idle, is the pool's ([`super`]).

use std::io::{ErrorKind, IoSlice};

use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::PlainError;
use super::wire::{self, ChunkedBody, Framing, Parsed, ResponseHead};

/// Longest response body read (to keep the connection reusable); longer
/// bodies are dropped with their connection.
pub const MAX_RESPONSE_BODY: u64 = 64 * 1024;

/// How much room the read buffer has for each read (answers are mostly a
/// few hundred bytes).
const READ_CHUNK: usize = 4 * 1024;
/// A buffer grown past this (a long head or body) is let go of before the
/// connection idles, so idle connections hold little.
const KEPT_BUFFER: usize = 16 * 1024;

/// An open connection and its buffers (kept across requests).
pub struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet taken by the answer.
    read: Vec<u8>,
    /// The request head being written.
    pub(super) head: Vec<u8>,
}

/// What reading an answer's body ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// Read to its end; the connection may carry the next request.
    Reusable,
    /// Read, or skipped as too long, but the connection may not be reused.
    Spent,
}

impl Conn {
    /// A connection over `stream` (`TCP_NODELAY` set here).
    pub fn new(stream: TcpStream) -> Self {
        // Small requests go out at once.
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            read: Vec::new(),
            head: Vec::new(),
        }
    }

    /// Lets go of buffers a long answer or head grew, before idling.
    pub fn trim(&mut self) {
        if self.read.capacity() > KEPT_BUFFER {
            self.read = Vec::new();
        }
        if self.head.capacity() > KEPT_BUFFER {
            self.head = Vec::new();
        }
    }

    /// Whether an idle connection can take a request: the receiver has
    /// neither closed it nor sent anything unasked. Costs no syscall
    /// unless the socket was reported readable.
    pub fn is_usable(&self) -> bool {
        match self.stream.readable().now_or_never() {
            None => true,
            Some(Err(_)) => false,
            Some(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes the head in [`Conn::head`] and `body`, then reads the
    /// answer's head (skipping interim `1xx` answers).
    pub async fn exchange(&mut self, body: &[u8]) -> Result<ResponseHead, PlainError> {
        self.write_request(body).await.map_err(PlainError::Io)?;
        self.read.clear();
        loop {
            if !self.read.is_empty() {
                match wire::parse_response_head(&self.read).map_err(PlainError::Answer)? {
                    Parsed::Partial => {}
                    Parsed::Interim(len) => {
                        self.read.drain(..len);
                        continue;
                    }
                    Parsed::Final(head, len) => {
                        self.read.drain(..len);
                        return Ok(head);
                    }
                }
            }
            if self.fill().await.map_err(PlainError::Io)? == 0 {
                return Err(PlainError::Closed);
            }
        }
    }

    async fn write_request(&mut self, body: &[u8]) -> std::io::Result<()> {
        let (mut head, mut body) = (&self.head[..], body);
        while !head.is_empty() {
            let n = self
                .stream
                .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                .await?;
            if n == 0 {
                return Err(ErrorKind::WriteZero.into());
            }
            let from_head = n.min(head.len());
            head = &head[from_head..];
            body = &body[n - from_head..];
        }
        self.stream.write_all(body).await
    }

    /// Reads more of the answer into the buffer; 0 when the receiver closed.
    async fn fill(&mut self) -> std::io::Result<usize> {
        self.read.reserve(READ_CHUNK);
        self.stream.read_buf(&mut self.read).await
    }

    /// Reads (and drops) the body `head` announced, at most
    /// [`MAX_RESPONSE_BODY`] bytes of it. An error is the body's failure:
    /// the answer's status still stands.
    pub async fn read_body(&mut self, head: &ResponseHead) -> Result<BodyEnd, PlainError> {
        let ends = match head.framing {
            Framing::Empty => true,
            Framing::Length(len) if len > MAX_RESPONSE_BODY => return Ok(BodyEnd::Spent),
            Framing::Length(len) => self.read_length(len).await?,
            Framing::Chunked => self.read_chunked().await?,
            Framing::UntilClose => {
                self.read_to_close().await?;
                return Ok(BodyEnd::Spent);
            }
        };
        // Bytes past the answer were never asked for: not reused.
        Ok(if ends && head.keep_alive && self.read.is_empty() {
            BodyEnd::Reusable
        } else {
            BodyEnd::Spent
        })
    }

    async fn read_length(&mut self, len: u64) -> Result<bool, PlainError> {
        let mut left = len;
        loop {
            let take = usize::try_from(left).map_or(self.read.len(), |l| l.min(self.read.len()));
            self.read.drain(..take);
            left -= take as u64;
            if left == 0 {
                return Ok(true);
            }
            if self.fill().await.map_err(PlainError::Io)? == 0 {
                return Err(PlainError::Closed);
            }
        }
    }

    async fn read_chunked(&mut self) -> Result<bool, PlainError> {
        let mut chunked = ChunkedBody::default();
        let mut read = 0u64;
        loop {
            let took = chunked.feed(&self.read).map_err(PlainError::Answer)?;
            self.read.drain(..took);
            read += took as u64;
            if chunked.is_done() {
                return Ok(true);
            }
            if read > MAX_RESPONSE_BODY {
                return Ok(false);
            }
            if self.fill().await.map_err(PlainError::Io)? == 0 {
                return Err(PlainError::Closed);
            }
        }
    }

    async fn read_to_close(&mut self) -> Result<(), PlainError> {
        let mut read = self.read.len() as u64;
        loop {
            self.read.clear();
            if read > MAX_RESPONSE_BODY {
                return Ok(());
            }
            match self.fill().await.map_err(PlainError::Io)? {
                0 => return Ok(()),
                n => read += n as u64,
            }
        }
    }
}
