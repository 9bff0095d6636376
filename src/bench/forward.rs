//! The raw forward baseline: the least a Kafka-to-HTTP forwarder can do
//! for batch delivery (scenario (b)), to set the pipeline against the
//! physical limit of the job and not only of consuming.
//!
//! One thread reads a consumer with the pipeline's settings, in batches as
//! the pipeline reads ([`super::raw_consume`]), and appends each record's
//! value to a JSON array of `batch` events; full arrays go
//! over a bounded channel to a few threads, each POSTing them on one
//! blocking keep-alive HTTP/1.1 connection to the lean receiver and
//! reading the answer's head. No parsing, matching, signing, ack
//! tracking, activity log or metrics: none of hookstream's work.
//!
//! Owns only its threads and sockets; the measuring (rate, CPU) is the
//! parent's.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::BaseConsumer;

use super::raw_consume::{self, Reads};

/// Threads POSTing batches (each one connection, one request in flight).
pub const SENDERS: usize = 4;

/// Reads `records` records from `consumer` and POSTs them to `addr` in
/// JSON arrays of `batch`, calling `at_first` when the first record is
/// read; returns once every array was answered.
pub fn forward(
    consumer: &BaseConsumer,
    records: u64,
    batch: usize,
    addr: SocketAddr,
    at_first: impl FnOnce(),
) -> Result<()> {
    let (tx, rx) = sync_channel::<Vec<u8>>(SENDERS * 2);
    let rx = Arc::new(Mutex::new(rx));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name("bench-forward".into())
                .spawn(move || post_batches(addr, &rx))
        })
        .collect::<std::io::Result<_>>()
        .context("starting the raw forward's senders")?;
    let polled = poll_into_batches(consumer, records, batch.max(1), &tx, at_first);
    drop(tx);
    for sender in senders {
        sender
            .join()
            .map_err(|_| anyhow::anyhow!("a raw forward sender panicked"))??;
    }
    polled
}

fn poll_into_batches(
    consumer: &BaseConsumer,
    records: u64,
    batch: usize,
    tx: &SyncSender<Vec<u8>>,
    at_first: impl FnOnce(),
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let (mut seen, mut in_batch) = (0u64, 0usize);
    let mut body = Vec::with_capacity(batch * 256);
    let mut stopped = false;
    let each = |value: &[u8]| {
        seen += 1;
        body.push(if in_batch == 0 { b'[' } else { b',' });
        body.extend_from_slice(if value.is_empty() { b"null" } else { value });
        in_batch += 1;
        if in_batch == batch || seen == records {
            body.push(b']');
            let full = std::mem::replace(&mut body, Vec::with_capacity(batch * 256));
            in_batch = 0;
            stopped = tx.send(full).is_err();
        }
        !stopped
    };
    let read = raw_consume::read(consumer, records, Reads::Batches, deadline, at_first, each);
    if stopped {
        bail!("raw forward: every sender stopped");
    }
    if read < records {
        bail!("raw forward: {read} of {records} records read in 600 s");
    }
    Ok(())
}

/// POSTs the arrays taken from `rx` until it closes.
fn post_batches(addr: SocketAddr, rx: &Mutex<Receiver<Vec<u8>>>) -> Result<()> {
    let mut stream = TcpStream::connect(addr).context("raw forward: connecting")?;
    stream.set_nodelay(true)?;
    let mut request = Vec::with_capacity(64 * 1024);
    let mut answer = vec![0u8; 4096];
    loop {
        let next = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => bail!("raw forward: the batch channel's lock is poisoned"),
        };
        let Ok(body) = next else {
            return Ok(());
        };
        request.clear();
        write!(
            request,
            "POST /hooks HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )?;
        request.extend_from_slice(&body);
        stream.write_all(&request)?;
        read_answer_head(&mut stream, &mut answer)?;
    }
}

/// Reads one answer without a body (the lean receiver's `204`).
fn read_answer_head(stream: &mut TcpStream, buf: &mut [u8]) -> Result<()> {
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..])?;
        if n == 0 {
            bail!("raw forward: the receiver closed the connection");
        }
        filled += n;
        if buf[..filled].windows(4).any(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 2") {
                bail!("raw forward: the receiver did not answer 2xx");
            }
            return Ok(());
        }
        if filled == buf.len() {
            bail!("raw forward: an answer head longer than {filled} bytes");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use rdkafka::ClientConfig;
    use rdkafka::consumer::Consumer;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    use super::*;
    use crate::bench::events::event_body;
    use crate::bench::receiver::FastReceiver;
    use crate::kafka::EmbeddedBroker;

    #[test]
    fn every_record_reaches_the_receiver_in_arrays_of_the_batch_size() {
        let broker = EmbeddedBroker::start(1).expect("embedded broker");
        broker.create_topic("forwarded", 4).expect("topic");
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .create()
            .expect("producer");
        for i in 0..250u64 {
            let body = event_body(i, 1);
            producer
                .send(BaseRecord::<(), _>::to("forwarded").payload(&body))
                .expect("queued");
        }
        producer.flush(Duration::from_secs(10)).expect("flushed");
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .set("group.id", "forward-test")
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        consumer.subscribe(&["forwarded"]).expect("subscribed");
        let receiver = FastReceiver::start().expect("receiver");

        let mut firsts = 0;
        forward(&consumer, 250, 100, receiver.addr(), || firsts += 1).expect("forwarded");

        let counts = receiver.counts();
        assert_eq!(counts.events.load(Ordering::Relaxed), 250);
        assert_eq!(counts.requests.load(Ordering::Relaxed), 3);
        assert_eq!(firsts, 1, "the first record is announced once");
    }
}
