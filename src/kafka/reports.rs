//! A producer's delivery reports, served on a thread of its own that sleeps
//! while there are none.
//!
//! rust-rdkafka's `BaseProducer::poll(timeout)`, and the thread its
//! `ThreadedProducer` and `FutureProducer` run, wait on the producer's
//! queue for what remains of a deadline truncated to whole milliseconds, so
//! the last fraction of a millisecond of every wait is spent polling with a
//! zero timeout in a loop: about 1 % of a core per producer, idle or busy
//! (librdkafka fixed the same in its own main loop, confluentinc/librdkafka
//! issue 4684). A [`ReportThread`] instead asks librdkafka to call it when
//! the queue stops being empty (`rd_kafka_queue_cb_event_enable`), serves
//! what is there with polls that do not wait, and parks until the next call.
//!
//! Owns that thread and the callback's registration; what a report means is
//! the producer's context's business, not this module's.

use std::ffi::c_void;
use std::panic::AssertUnwindSafe;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::bindings as rdsys;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};

/// How long the thread parks when nothing wakes it: a bound on how late a
/// report could be served were a wake-up ever missed, not a poll interval.
const PARK_AT_MOST: Duration = Duration::from_secs(1);

/// Serves one producer's delivery reports until stopped (or dropped).
#[derive(Debug)]
pub struct ReportThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ReportThread {
    /// Starts serving `producer`'s reports on a thread named `name`.
    pub fn spawn<C>(name: &str, producer: Arc<BaseProducer<C>>) -> Result<Self>
    where
        C: ProducerContext + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn({
                let stop = Arc::clone(&stop);
                move || serve(&producer, &stop)
            })
            .with_context(|| format!("spawning the {name} thread"))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Tells the thread to stop serving, at once (it lets go of its
    /// producer when it ends).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = &self.thread {
            thread.thread().unpark();
        }
    }

    /// [`Self::stop`], and the thread to join (`None` when already taken).
    pub fn stopped(&mut self) -> Option<JoinHandle<()>> {
        self.stop();
        self.thread.take()
    }
}

impl Drop for ReportThread {
    /// Stops the thread and waits for it (it is parked, or finishing a
    /// report), as rust-rdkafka's `ThreadedProducer` does; not when dropped
    /// on that thread itself, by a report's completion.
    fn drop(&mut self) {
        if let Some(thread) = self.stopped()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// Serves until `stop`: everything queued, then park until librdkafka
/// says something arrived (or [`PARK_AT_MOST`]).
fn serve<C>(producer: &BaseProducer<C>, stop: &AtomicBool)
where
    C: ProducerContext + 'static,
{
    let Some(queue) = ArrivalSignal::register(producer.client().native_ptr()) else {
        // No main queue to watch (librdkafka always has one): rust-rdkafka's
        // timed poll, spin and all, rather than no reports.
        while !stop.load(Ordering::Acquire) {
            producer.poll(Duration::from_millis(100));
        }
        return;
    };
    while !stop.load(Ordering::Acquire) {
        while queue.len() > 0 && !stop.load(Ordering::Acquire) {
            // A report whose handling panics is lost; the thread goes on
            // serving the others (were it to end, no write of the producer
            // would ever complete again).
            let served = std::panic::catch_unwind(AssertUnwindSafe(|| {
                producer.poll(Duration::ZERO);
            }));
            if served.is_err() {
                tracing::error!("handling a delivery report panicked; serving the others");
            }
        }
        std::thread::park_timeout(PARK_AT_MOST);
    }
}

/// The producer's main queue with a callback that unparks the serving
/// thread whenever the queue goes from empty to not empty. Must be dropped
/// (the callback unregistered) before the producer's client is destroyed.
struct ArrivalSignal {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    /// The thread the callback unparks; boxed so its address, handed to
    /// librdkafka, stays put. Freed only after the callback is unregistered.
    waker: Box<Thread>,
}

impl ArrivalSignal {
    /// Registers the callback on `client`'s main queue, for the current
    /// thread; `None` when the client has no main queue.
    fn register(client: *mut rdsys::rd_kafka_t) -> Option<Self> {
        // SAFETY: `client` is a live client (the caller holds its producer);
        // `rd_kafka_queue_get_main` returns a new reference to its main
        // queue, released in `drop`.
        let queue = NonNull::new(unsafe { rdsys::rd_kafka_queue_get_main(client) })?;
        let waker = Box::new(std::thread::current());
        let opaque = std::ptr::from_ref::<Thread>(&waker)
            .cast_mut()
            .cast::<c_void>();
        // SAFETY: `opaque` points into `waker`, which outlives the
        // registration (`drop` unregisters first); `unpark_waker` only reads
        // it.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(queue.as_ptr(), Some(unpark_waker), opaque);
        }
        Some(Self { queue, waker })
    }

    /// Operations waiting on the queue.
    fn len(&self) -> usize {
        // SAFETY: `self.queue` is the reference taken in `register`.
        unsafe { rdsys::rd_kafka_queue_length(self.queue.as_ptr()) }
    }
}

impl Drop for ArrivalSignal {
    fn drop(&mut self) {
        // SAFETY: unregistering takes the queue's lock, under which librdkafka
        // calls the callback: none runs after this returns, so `waker` may
        // then be freed. The queue reference is released once.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), None, std::ptr::null_mut());
            rdsys::rd_kafka_queue_destroy(self.queue.as_ptr());
        }
        // `waker` is freed after this body, with the unregistered callback.
        let _ = &self.waker;
    }
}

/// librdkafka's callback (from whichever thread enqueued, under the queue's
/// lock): unpark the serving thread.
unsafe extern "C" fn unpark_waker(_client: *mut rdsys::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the `Thread` registered with this callback, alive
    // until it is unregistered (see `ArrivalSignal`).
    let waker = unsafe { &*opaque.cast::<Thread>() };
    waker.unpark();
}

#[cfg(test)]
mod tests {
    use std::os::unix::thread::JoinHandleExt;
    use std::sync::Mutex;
    use std::time::Instant;

    use rdkafka::ClientConfig;
    use rdkafka::ClientContext;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{
        BaseRecord, DefaultProducerContext, DeliveryResult, NoCustomPartitioner, Producer,
    };

    use super::*;

    /// Keeps the offsets of the reports it is given; panics on the report
    /// of a record sent with `true` as its opaque.
    #[derive(Default)]
    struct Offsets(Mutex<Vec<i64>>);

    impl ClientContext for Offsets {}

    impl ProducerContext<NoCustomPartitioner> for Offsets {
        type DeliveryOpaque = Box<bool>;

        fn delivery(&self, result: &DeliveryResult<'_>, panics: Box<bool>) {
            assert!(!*panics, "a report's handling fails");
            if let Ok(message) = result {
                self.0
                    .lock()
                    .unwrap()
                    .push(rdkafka::Message::offset(message));
            }
        }
    }

    impl Offsets {
        fn count(&self) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    /// CPU time the thread of `handle` has used so far.
    fn cpu_of(handle: &JoinHandle<()>) -> Duration {
        let mut clock: libc::clockid_t = 0;
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: the thread is alive (not joined), the out-pointers valid.
        unsafe {
            assert_eq!(
                libc::pthread_getcpuclockid(handle.as_pthread_t(), &mut clock),
                0
            );
            assert_eq!(libc::clock_gettime(clock, &mut ts), 0);
        }
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    fn wait_for(what: &str, within: Duration, done: impl Fn() -> bool) {
        let deadline = Instant::now() + within;
        while !done() {
            assert!(Instant::now() < deadline, "{what} within {within:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A mock cluster with a one-partition `topic`, and a producer to it
    /// with `settings`.
    fn cluster_and_producer(
        topic: &str,
        settings: &[(&str, &str)],
    ) -> (
        MockCluster<'static, DefaultProducerContext>,
        Arc<BaseProducer<Offsets>>,
    ) {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic(topic, 1, 1).unwrap();
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", cluster.bootstrap_servers());
        for (key, value) in settings {
            config.set(*key, *value);
        }
        let producer = Arc::new(config.create_with_context(Offsets::default()).unwrap());
        (cluster, producer)
    }

    #[test]
    fn a_report_whose_handling_panics_does_not_stop_the_others() {
        // One record per batch, so one report per record.
        let (_cluster, producer) = cluster_and_producer(
            "fragile",
            &[("linger.ms", "0"), ("batch.num.messages", "1")],
        );
        let _reports = ReportThread::spawn("test-fragile", Arc::clone(&producer)).unwrap();
        for i in 0..20u32 {
            let payload = i.to_string();
            producer
                .send(
                    BaseRecord::with_opaque_to("fragile", Box::new(i == 5))
                        .payload(&payload)
                        .key(""),
                )
                .unwrap();
            // In order, each acknowledged before the next is sent.
            wait_for("the report", Duration::from_secs(10), || {
                producer.context().0.lock().unwrap().len() as u32 + u32::from(i >= 5) == i + 1
            });
        }
        let offsets = producer.context().0.lock().unwrap().clone();
        let expected: Vec<i64> = (0..20).filter(|&o| o != 5).collect();
        assert_eq!(offsets, expected);
    }

    #[test]
    fn every_report_is_served_promptly_and_an_idle_thread_sleeps() {
        let (_cluster, producer) = cluster_and_producer("reports", &[("linger.ms", "1")]);
        let mut reports = ReportThread::spawn("test-reports", Arc::clone(&producer)).unwrap();
        for i in 0..500u32 {
            let payload = i.to_string();
            producer
                .send(
                    BaseRecord::with_opaque_to("reports", Box::new(false))
                        .payload(&payload)
                        .key(""),
                )
                .unwrap();
        }
        wait_for("500 reports served", Duration::from_secs(20), || {
            producer.context().count() == 500
        });
        let mut offsets = producer.context().0.lock().unwrap().clone();
        offsets.sort_unstable();
        assert_eq!(offsets, (0..500).collect::<Vec<i64>>());

        // Idle for a second: rust-rdkafka's own poll loop spends about 10 ms
        // of it spinning; this thread parks.
        let thread = reports.thread.as_ref().unwrap();
        let before = cpu_of(thread);
        std::thread::sleep(Duration::from_secs(1));
        let idle = cpu_of(thread) - before;
        assert!(
            idle < Duration::from_millis(2),
            "the idle report thread used {idle:?} of CPU in a second"
        );

        // A report after the idle spell is served at once, not after the
        // park's timeout.
        producer
            .send(
                BaseRecord::with_opaque_to("reports", Box::new(false))
                    .payload("late")
                    .key(""),
            )
            .unwrap();
        wait_for("the late report served", PARK_AT_MOST / 2, || {
            producer.context().count() == 501
        });

        // Stopping is immediate too.
        let thread = reports.stopped().unwrap();
        let stopping = Instant::now();
        thread.join().unwrap();
        assert!(
            stopping.elapsed() < PARK_AT_MOST / 2,
            "stopped in {:?}",
            stopping.elapsed()
        );
    }
}
