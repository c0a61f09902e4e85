//! Read-ahead bridges: a producer (a thread or a task) reads a stream ahead of its consumer
//! into a bounded channel of chunks, so producing and consuming overlap while memory stays
//! bounded. The three bridges of the daemon share it: restore's inflating thread, a restore
//! download's body read by a blocking thread, and a user download's body read from an
//! adapter on a blocking thread.
//!
//! The shape: at most `chunks_ahead` chunks wait in the channel (back-pressure beyond that);
//! an error reaches the consumer after the chunks before it and ends the stream; the producer
//! stops as soon as the consumer is dropped; a producer that goes away without saying it
//! reached the end is an error for the consumer, never an early end of file.
//!
//! Why not `tokio_util::io`: `SyncIoBridge`, `StreamReader` and `ReaderStream` convert on
//! the consumer's own thread, one read at a time, so nothing runs ahead: a restore would
//! take the sum of inflating and unpacking (and of downloading) instead of the longer of
//! them, and a slow adapter read would stall a download's socket. The overlap is the point.

use std::io::{self, ErrorKind, Read};
use std::pin::pin;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

/// What the producer sends.
#[derive(Debug)]
enum Piece {
    /// The next bytes of the stream.
    Data(Bytes),
    /// The stream ended where it should.
    End,
    /// The stream failed; nothing follows.
    Failed(io::Error),
}

/// A bounded channel of chunks holding at most `chunks_ahead` of them (at least one).
pub fn channel(chunks_ahead: usize) -> (ChunkSender, ChunkReceiver) {
    let (tx, rx) = mpsc::channel(chunks_ahead.max(1));
    (ChunkSender { tx }, ChunkReceiver { rx })
}

/// The producer's half of a [`channel`].
#[derive(Debug)]
pub struct ChunkSender {
    tx: mpsc::Sender<Piece>,
}

/// The consumer's half of a [`channel`]: read it as a blocking [`Read`] or an async stream.
#[derive(Debug)]
pub struct ChunkReceiver {
    rx: mpsc::Receiver<Piece>,
}

impl ChunkSender {
    /// Reads `source` in chunks of up to `chunk_bytes` into the channel until its end (or
    /// `len` bytes, when given: an end before them is an `UnexpectedEof` error), an error,
    /// or the consumer going away. Blocks: call it on a thread outside the async runtime.
    pub fn send_from_reader(self, mut source: impl Read, chunk_bytes: usize, len: Option<u64>) {
        let mut remaining = len;
        loop {
            let want = match remaining {
                Some(0) => break,
                Some(left) => chunk_bytes.min(usize::try_from(left).unwrap_or(usize::MAX)),
                None => chunk_bytes,
            };
            let mut chunk = vec![0; want];
            let read = loop {
                match source.read(&mut chunk) {
                    Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                    other => break other,
                }
            };
            let piece = match read {
                Ok(0) if remaining.is_none() => break,
                Ok(0) => Piece::Failed(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the source ended before its announced length",
                )),
                Ok(n) => {
                    chunk.truncate(n);
                    remaining = remaining.map(|left| left - n as u64);
                    Piece::Data(Bytes::from(chunk))
                }
                Err(err) => Piece::Failed(err),
            };
            let failed = matches!(piece, Piece::Failed(_));
            if self.tx.blocking_send(piece).is_err() || failed {
                return;
            }
        }
        // The consumer may be gone already; then nobody wants the end either.
        let _ = self.tx.blocking_send(Piece::End);
    }

    /// Moves the chunks of `stream` into the channel until its end, an error, or the
    /// consumer going away (noticed even while `stream` is waiting).
    pub async fn send_from_stream(self, stream: impl Stream<Item = io::Result<Bytes>>) {
        let mut stream = pin!(stream);
        loop {
            let piece = tokio::select! {
                item = stream.next() => match item {
                    Some(Ok(data)) => Piece::Data(data),
                    Some(Err(err)) => Piece::Failed(err),
                    None => Piece::End,
                },
                () = self.tx.closed() => return,
            };
            let last = !matches!(piece, Piece::Data(_));
            if self.tx.send(piece).await.is_err() || last {
                return;
            }
        }
    }
}

/// The error for a producer that went away without reaching the end.
fn cut_short() -> io::Error {
    io::Error::new(
        ErrorKind::UnexpectedEof,
        "the stream stopped before its end",
    )
}

impl ChunkReceiver {
    /// The chunks as a blocking [`Read`]. It blocks, so it must not be read from inside an
    /// async task: use it on a `spawn_blocking` thread or another thread outside the runtime.
    pub fn into_reader(self) -> ChunkReader {
        ChunkReader {
            rx: self.rx,
            chunk: Bytes::new(),
            finished: false,
        }
    }

    /// The chunks as an async stream, ending after the first error.
    pub fn into_stream(self) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold(Some(self.rx), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(Piece::Data(data)) => Some((Ok(data), Some(rx))),
                Some(Piece::End) => None,
                Some(Piece::Failed(err)) => Some((Err(err), None)),
                None => Some((Err(cut_short()), None)),
            }
        })
    }
}

/// A [`ChunkReceiver`] as a blocking [`Read`]; see [`ChunkReceiver::into_reader`].
#[derive(Debug)]
pub struct ChunkReader {
    rx: mpsc::Receiver<Piece>,
    /// What is left of the chunk being read.
    chunk: Bytes,
    /// Whether the producer said the stream ended.
    finished: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.chunk.is_empty() {
            if self.finished {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Piece::Data(data)) => self.chunk = data,
                Some(Piece::End) => self.finished = true,
                Some(Piece::Failed(err)) => return Err(err),
                None => return Err(cut_short()),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// Reads `source` (at most `len` bytes, all of them or an error) ahead of the returned stream
/// on a blocking thread, in the caller's tracing span.
pub fn spawn_reader(
    source: impl Read + Send + 'static,
    chunk_bytes: usize,
    chunks_ahead: usize,
    len: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let (chunks, stream) = channel(chunks_ahead);
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        span.in_scope(|| chunks.send_from_reader(source, chunk_bytes, Some(len)))
    });
    stream.into_stream()
}

/// Reads `stream` ahead of the returned blocking reader on a task of `handle`; dropping the
/// reader stops the task.
pub fn spawn_stream(
    handle: &tokio::runtime::Handle,
    stream: impl Stream<Item = io::Result<Bytes>> + Send + 'static,
    chunks_ahead: usize,
) -> ChunkReader {
    let (chunks, reader) = channel(chunks_ahead);
    handle.spawn(chunks.send_from_stream(stream));
    reader.into_reader()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out `data` a few bytes at a time, then fails if `fail` is set.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        fail: bool,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.data.len() && self.fail {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.data.len() - self.at).min(7);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    fn trickle(len: usize, fail: bool) -> Trickle {
        Trickle {
            data: (0..len).map(|i| (i % 251) as u8).collect(),
            at: 0,
            fail,
        }
    }

    #[test]
    fn a_thread_reads_ahead_in_order_then_passes_the_error_on() {
        let source = trickle(10_000, true);
        let expected = source.data.clone();
        let (chunks, receiver) = channel(2);
        let producer = std::thread::spawn(move || chunks.send_from_reader(source, 100, None));
        let mut reader = receiver.into_reader();
        let mut got = vec![0; expected.len()];
        reader.read_exact(&mut got).unwrap();
        assert!(got == expected);
        let err = reader.read(&mut [0; 10]).unwrap_err();
        assert_eq!(err.to_string(), "disk on fire");
        producer.join().unwrap();
    }

    #[test]
    fn a_dropped_consumer_stops_the_producer() {
        let (chunks, receiver) = channel(1);
        drop(receiver);
        let mut source = trickle(10_000, false);
        chunks.send_from_reader(&mut source, 64, None);
        // One read of 7 bytes, then the send fails and the producer stops.
        assert_eq!(source.at, 7);
    }

    #[test]
    fn a_producer_gone_before_the_end_is_an_error() {
        let (chunks, receiver) = channel(1);
        drop(chunks);
        let err = receiver.into_reader().read(&mut [0; 1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_short_source_is_an_error_at_the_end_of_the_stream() {
        let stream = spawn_reader(trickle(1000, false), 64, 4, 1001);
        let items: Vec<io::Result<Bytes>> = stream.collect().await;
        let (last, data) = items.split_last().unwrap();
        let len: usize = data.iter().map(|d| d.as_ref().unwrap().len()).sum();
        assert_eq!(len, 1000);
        assert_eq!(last.as_ref().unwrap_err().kind(), ErrorKind::UnexpectedEof);
        // Exactly the announced length: a clean end, and nothing read past it.
        let stream = spawn_reader(trickle(1000, true), 64, 4, 1000);
        let items: Vec<io::Result<Bytes>> = stream.collect().await;
        assert!(items.iter().all(Result::is_ok));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_is_read_ahead_of_a_blocking_reader() {
        let parts = vec![
            Ok(Bytes::from_static(b"abc")),
            Ok(Bytes::from_static(b"")),
            Ok(Bytes::from_static(b"def")),
            Err(io::Error::new(ErrorKind::TimedOut, "stalled")),
        ];
        let mut reader = spawn_stream(
            &tokio::runtime::Handle::current(),
            futures_util::stream::iter(parts),
            2,
        );
        let result = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            let err = reader.read_to_end(&mut got).unwrap_err();
            (got, err.kind())
        })
        .await
        .unwrap();
        assert_eq!(result, (b"abcdef".to_vec(), ErrorKind::TimedOut));
    }
}
