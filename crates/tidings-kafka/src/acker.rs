//! Settling one delivery: moving its partition's commit point, writing it to the retry
//! topic, or writing it to the dead-letter topic.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rdkafka::producer::FutureProducer;
use tidings_core::{transport::Acker, DeadLetterInfo, Envelope, Error, Result};

use crate::publisher::{send_one, Outgoing};
use crate::subscriber::state::{Shared, Slot, Tp};
use crate::wire::{headers_of, origin_headers, retry_headers, Origin};

/// Settles one Kafka delivery by moving its partition's commit point.
pub struct KafkaAcker {
    shared: Arc<Shared>,
    producer: FutureProducer,
    tp: Tp,
    epoch: u64,
    offset: i64,
    origin: Origin,
    settled: bool,
}

impl std::fmt::Debug for KafkaAcker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaAcker")
            .field("topic", &self.shared.topic_of(self.tp.0))
            .field("partition", &self.tp.1)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl KafkaAcker {
    /// An acker for the record at `offset` of `tp`, first read at `origin`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        producer: FutureProducer,
        tp: Tp,
        epoch: u64,
        offset: i64,
        origin: Origin,
    ) -> Self {
        KafkaAcker {
            shared,
            producer,
            tp,
            epoch,
            offset,
            origin,
            settled: false,
        }
    }

    /// Drop the acker of a record that was never handed out (a stale one), without
    /// marking anything.
    pub(crate) fn forget(mut self) {
        self.settled = true;
    }

    /// Write `record` to `topic` and, once the broker confirmed it, settle the delivery;
    /// a failure (`doing` `envelope`) hands the acker back.
    async fn send_then_settle(
        mut self,
        topic: &str,
        record: Outgoing<'_>,
        doing: &str,
        envelope: &Envelope,
    ) -> Result<(), (Error, Self)> {
        match send_one(&self.producer, topic, record).await {
            Ok(()) => {
                self.done();
                Ok(())
            }
            Err(e) => Err((e.context(format_args!("{doing} {}", envelope.id)), self)),
        }
    }

    fn done(&mut self) {
        self.settled = true;
        self.shared
            .settle(self.tp, self.epoch, self.offset, Slot::Done);
    }
}

impl Drop for KafkaAcker {
    fn drop(&mut self) {
        if !self.settled {
            self.shared
                .settle(self.tp, self.epoch, self.offset, Slot::Abandoned);
        }
    }
}

impl Acker for KafkaAcker {
    async fn ack(mut self) -> Result<(), (Error, Self)> {
        self.done();
        Ok(())
    }

    async fn retry(
        mut self,
        envelope: Arc<Envelope>,
        next_attempt: u32,
        delay: Duration,
    ) -> Result<(), (Error, Self)> {
        // The core waits in place for a keyed envelope that failed (so later events of its
        // key cannot overtake it) and asks for a delay only where order may be left: an
        // unkeyed retry, or a scheduled event that arrived early, keyed or not. Those go
        // to the retry topic; seeking back would only read them again at once.
        if delay.is_zero() {
            // Redeliver in place: leave the offset unsettled, so the poll thread seeks back
            // to it (or the next owner of the partition reads it again).
            self.settled = true;
            self.shared
                .settle(self.tp, self.epoch, self.offset, Slot::Abandoned);
            return Ok(());
        }
        let due = SystemTime::now() + delay;
        let record = Outgoing {
            key: None,
            headers: retry_headers(&envelope, next_attempt, due, self.origin),
            payload: &envelope.payload,
        };
        let topic = self.shared.names.retry.clone();
        self.send_then_settle(&topic, record, "scheduling a retry of", &envelope)
            .await
    }

    async fn dead_letter(
        self,
        envelope: Arc<Envelope>,
        info: DeadLetterInfo,
    ) -> Result<(), (Error, Self)> {
        let mut parked = info.stamped(&envelope);
        for (name, value) in origin_headers(self.origin) {
            parked.set_header(name, value);
        }
        let record = Outgoing {
            key: parked.ordering_key.as_deref(),
            headers: headers_of(&parked, &[]),
            payload: &parked.payload,
        };
        let topic = self.shared.names.dead_letter.clone();
        self.send_then_settle(&topic, record, "dead-lettering", &envelope)
            .await
    }
}
