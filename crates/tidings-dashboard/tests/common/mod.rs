//! The service the dashboard tests look at: `billing` publishes orders and handles them,
//! and its handler fails for good on an order whose note starts with `fail`, so failed
//! orders become dead letters.

#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tidings_core::transport::Transport;
use tidings_core::{Bus, Context, DeadLetter, HandlerError, Subscription};
use tidings_dashboard::{AuditEntry, Dashboard};
use tidings_macros::{Event, Topic};
use uuid::Uuid;

/// An order was placed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Event)]
#[event(name = "shop.order-placed", version = 1)]
pub struct OrderPlaced {
    /// The order number.
    pub order: u32,
    /// A note; `fail...` makes the handler fail.
    pub note: String,
}

/// The orders topic.
#[derive(Debug, Clone, Topic)]
#[topic(name = "orders")]
pub enum OrderEvents {
    /// See [`OrderPlaced`].
    OrderPlaced(OrderPlaced),
}

/// What the handler took (the event and its envelope id), and whether the bug that makes
/// `fail...` orders fail is fixed.
#[derive(Default)]
pub struct Billing {
    pub handled: Mutex<Vec<(OrderPlaced, Uuid)>>,
    pub fixed: std::sync::atomic::AtomicBool,
}

async fn bill(e: OrderPlaced, cx: Context<Billing>) -> Result<(), HandlerError> {
    let fixed = cx.state().fixed.load(std::sync::atomic::Ordering::SeqCst);
    if e.note.starts_with("fail") && !fixed {
        return Err(HandlerError::permanent(std::io::Error::other(format!(
            "cannot bill order {}: {}",
            e.order, e.note
        ))));
    }
    cx.state().handled.lock().unwrap().push((e, cx.id()));
    Ok(())
}

/// The billing service, its handled events and its audit trail.
pub struct Shop {
    pub bus: Bus,
    pub billing: Arc<Billing>,
    pub audit: Arc<Mutex<Vec<AuditEntry>>>,
}

impl Shop {
    /// A bus named `billing` on `transport`, in namespace `ns`.
    pub async fn start(transport: impl Transport, ns: &str) -> Shop {
        Shop::start_with(transport, ns, |b| b).await
    }

    /// [`start`](Self::start), with more set on the builder by `more`.
    pub async fn start_with(
        transport: impl Transport,
        ns: &str,
        more: impl FnOnce(tidings_core::BusBuilder) -> tidings_core::BusBuilder,
    ) -> Shop {
        let billing = Arc::new(Billing::default());
        let bus = Bus::builder("billing")
            .transport(transport)
            .namespace(ns)
            .publishes::<OrderEvents>()
            .subscribe(
                Subscription::to::<OrderEvents>()
                    .with_shared_state(billing.clone())
                    .on(bill),
            );
        let bus = more(bus).build().await.expect("the billing bus starts");
        Shop {
            bus,
            billing,
            audit: Arc::default(),
        }
    }

    /// The dashboard of the bus, recording its audit trail in `self.audit`.
    pub fn dashboard(&self) -> Dashboard {
        let audit = self.audit.clone();
        Dashboard::for_bus(&self.bus).audit(move |e| audit.lock().unwrap().push(e.clone()))
    }

    /// Publish an order; its envelope id.
    pub async fn place(&self, order: u32, note: &str) -> Uuid {
        self.bus
            .publish(OrderPlaced {
                order,
                note: note.to_string(),
            })
            .await
            .expect("published")
    }

    /// The dead letters, once there are `n` (fails after 30 s).
    pub async fn dead_letters(&self, n: usize) -> Vec<DeadLetter> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let letters = self
                .bus
                .dead_letters::<OrderEvents>(100)
                .await
                .expect("listed");
            if letters.len() == n {
                return letters;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} dead letters, found {}",
                letters.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The handled orders, once `pred` holds (fails after 30 s).
    pub async fn handled_when(
        &self,
        pred: impl Fn(&[(OrderPlaced, Uuid)]) -> bool,
    ) -> Vec<(OrderPlaced, Uuid)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let handled = self.billing.handled.lock().unwrap().clone();
            if pred(&handled) {
                return handled;
            }
            assert!(
                Instant::now() < deadline,
                "the handler never saw the expected events: {handled:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A fresh namespace, so tests never share broker objects.
pub fn namespace() -> String {
    format!("dash-{}", &Uuid::new_v4().simple().to_string()[..10])
}
