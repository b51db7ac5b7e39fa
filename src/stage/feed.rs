//! Partition feeds: each assigned partition's fetch queue, split off the
//! consumer's main queue, read by that partition's worker.

use std::ffi::CString;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};

/// Messages a worker takes from its partition's queue at a time, at most.
const BATCH: usize = 256;

/// One input message as fetched, borrowed from librdkafka's buffer.
#[derive(Clone, Copy, Debug)]
pub struct Raw<'a> {
    /// Message key.
    pub key: Option<&'a [u8]>,
    /// Message value.
    pub value: Option<&'a [u8]>,
    /// Broker or producer timestamp, epoch ms.
    pub ts_ms: Option<i64>,
    /// Input offset.
    pub offset: i64,
}

/// One partition's fetch queue, split off the consumer's main queue: the
/// partition's worker reads its messages straight from librdkafka, in
/// partition order, with no copy and no hand-over between threads.
///
/// It is split before the partition is assigned, so librdkafka's fetch start
/// leaves it alone (an application-forwarded queue is not re-forwarded) and
/// no message of the partition ever reaches the main queue.
pub struct PartitionFeed {
    queue: NonNull<rdkafka::bindings::rd_kafka_queue_t>,
    batch: Vec<*mut rdkafka::bindings::rd_kafka_message_t>,
    errors: crate::log::Repeats,
}

// SAFETY: a librdkafka queue handle may be used from any thread; the feed is
// used by one thread at a time (its worker), and the consumer outlives it
// (workers are joined before the consumer is dropped).
unsafe impl Send for PartitionFeed {}

impl PartitionFeed {
    /// Splits `topic`/`partition`'s queue off `consumer`'s main queue.
    pub(crate) fn split<C: ConsumerContext>(
        consumer: &BaseConsumer<C>,
        topic: &str,
        partition: i32,
    ) -> Option<Self> {
        use rdkafka::bindings as rd;
        let topic = CString::new(topic).ok()?;
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is a live consumer handle and `topic` a C string.
        let queue = NonNull::new(unsafe {
            rd::rd_kafka_queue_get_partition(rk, topic.as_ptr(), partition)
        })?;
        // SAFETY: `queue` was just obtained; forwarding to NULL detaches it.
        unsafe { rd::rd_kafka_queue_forward(queue.as_ptr(), std::ptr::null_mut()) };
        Some(PartitionFeed {
            queue,
            batch: vec![std::ptr::null_mut(); BATCH],
            errors: Default::default(),
        })
    }

    /// Hands the partition's next messages, in order, to `handle` (once, as
    /// one slice); waits up to `wait` when none is ready. Returns how many.
    pub fn poll(&mut self, wait: Duration, handle: impl FnOnce(&[Raw<'_>])) -> usize {
        use rdkafka::bindings as rd;
        let q = self.queue.as_ptr();
        // SAFETY: `q` is live; the array holds BATCH pointers.
        let n = unsafe { rd::rd_kafka_consume_batch_queue(q, 0, self.batch.as_mut_ptr(), BATCH) };
        let mut n = n.max(0) as usize;
        if n == 0 && !wait.is_zero() {
            // The batch call waits for a full batch; wait for the first message only.
            let ms = wait.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: `q` is live.
            let m = unsafe { rd::rd_kafka_consume_queue(q, ms) };
            if !m.is_null() {
                self.batch[0] = m;
                n = 1;
            }
        }
        let mut raws = Vec::with_capacity(n);
        for &m in &self.batch[..n] {
            // SAFETY: librdkafka returned `m`; it lives until destroyed below.
            let msg = unsafe { &*m };
            if msg.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                let bytes = |p: *mut std::ffi::c_void, len: usize| {
                    // SAFETY: librdkafka keeps `len` bytes at `p` until the message is destroyed.
                    (!p.is_null())
                        .then(|| unsafe { std::slice::from_raw_parts(p as *const u8, len) })
                };
                let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
                // SAFETY: `m` is a live message.
                let ts = unsafe { rd::rd_kafka_message_timestamp(m, &mut kind) };
                raws.push(Raw {
                    key: bytes(msg.key, msg.key_len),
                    value: bytes(msg.payload, msg.len),
                    ts_ms: (ts >= 0).then_some(ts),
                    offset: msg.offset,
                });
            } else {
                if let Some(n) = self.errors.hit() {
                    let e = rdkafka::error::RDKafkaErrorCode::from(msg.err);
                    tracing::warn!(partition = msg.partition, errors = n, "consumer: {e}");
                }
            }
        }
        let handed = raws.len();
        if handed > 0 {
            handle(&raws);
        }
        drop(raws);
        for &m in &self.batch[..n] {
            // SAFETY: returned by librdkafka above, destroyed once, after its last use.
            unsafe { rd::rd_kafka_message_destroy(m) };
        }
        handed
    }
}

impl Drop for PartitionFeed {
    fn drop(&mut self) {
        // SAFETY: the handle is live and dropped once.
        unsafe { rdkafka::bindings::rd_kafka_queue_destroy(self.queue.as_ptr()) };
    }
}
