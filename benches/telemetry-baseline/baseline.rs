//! tidings before and after its telemetry, in one process: the memory transport end to end
//! (publish `N` events one by one, until the handler has run for each) with the core of
//! commit `PRE` (the parent of the telemetry commit) and with the core of the working tree,
//! in alternating rounds on one runtime. Nothing listens: no `tracing` subscriber, no meter
//! provider. Built twice by `run.sh`: the working tree's core without and with its
//! `opentelemetry` feature.
//!
//! Prints per round the time of each and their ratio, then the medians. With
//! `TIDINGS_BENCH_ONLY=pre` or `now` it runs only that side, `TIDINGS_BENCH_ROUNDS` times,
//! and prints nothing: what `run.sh` runs under callgrind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct BookBorrowed {
    book_id: u64,
    patron_id: u64,
    title: String,
}

fn event(i: u64) -> BookBorrowed {
    BookBorrowed {
        book_id: i,
        patron_id: i ^ 0x5a5a,
        title: "The Left Hand of Darkness".to_string(),
    }
}

struct Counter {
    seen: AtomicU64,
    target: AtomicU64,
    done: Notify,
}

/// The same pipeline on one version of the core and memory transport.
macro_rules! pipeline {
    ($module:ident, $core:ident, $memory:ident) => {
        mod $module {
            use super::*;
            use $core::{
                Bus, Context, Event, EventInfo, HandlerError, Subscription, Topic, TopicMember,
            };

            impl Event for BookBorrowed {
                const NAME: &'static str = "bench.book-borrowed";
                const VERSION: u32 = 1;
            }

            // The same type implements both cores' traits: each `impl` names its own core.
            pub struct BenchEvents;

            impl Topic for BenchEvents {
                const NAME: &'static str = "bench";
                fn events() -> &'static [EventInfo] {
                    &[]
                }
            }

            impl TopicMember for BookBorrowed {
                type Topic = BenchEvents;
            }

            async fn count(e: BookBorrowed, cx: Context<Counter>) -> Result<(), HandlerError> {
                std::hint::black_box(e);
                let c = cx.state();
                if c.seen.fetch_add(1, Ordering::Relaxed) + 1 == c.target.load(Ordering::Relaxed) {
                    c.done.notify_one();
                }
                Ok(())
            }

            pub struct Pair {
                publisher: Bus,
                _consumer: Bus,
                counter: Arc<Counter>,
            }

            impl Pair {
                pub async fn new() -> Pair {
                    let counter = Arc::new(Counter {
                        seen: AtomicU64::new(0),
                        target: AtomicU64::new(0),
                        done: Notify::new(),
                    });
                    let memory = $memory::Memory::new();
                    let consumer = Bus::builder("catalog")
                        .transport(memory.clone())
                        .subscribe(
                            Subscription::to::<BenchEvents>()
                                .with_shared_state(counter.clone())
                                .on(count),
                        )
                        .build()
                        .await
                        .unwrap();
                    let publisher = Bus::builder("lending")
                        .transport(memory)
                        .publishes::<BenchEvents>()
                        .build()
                        .await
                        .unwrap();
                    Pair {
                        publisher,
                        _consumer: consumer,
                        counter,
                    }
                }

                /// Publish `n` events and wait until the handler has run for each.
                pub async fn round(&self, n: u64) -> Duration {
                    self.counter.seen.store(0, Ordering::Relaxed);
                    self.counter.target.store(n, Ordering::Relaxed);
                    let done = self.counter.done.notified();
                    let started = Instant::now();
                    for i in 0..n {
                        self.publisher.publish(event(i)).await.unwrap();
                    }
                    done.await;
                    started.elapsed()
                }
            }
        }
    };
}

pipeline!(pre, pre_core, pre_memory);
pipeline!(now, now_core, now_memory);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = env("TIDINGS_BENCH_EVENTS", 100_000);
    let rounds = env("TIDINGS_BENCH_ROUNDS", 15);
    let variant = if cfg!(feature = "opentelemetry") {
        "working tree with the opentelemetry feature"
    } else {
        "working tree without the opentelemetry feature"
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pre = pre::Pair::new().await;
        let now = now::Pair::new().await;
        // One side only, to count its instructions under callgrind (`run.sh` with
        // `CALLGRIND=1`).
        if let Ok(only) = std::env::var("TIDINGS_BENCH_ONLY") {
            for _ in 0..rounds {
                match only.as_str() {
                    "pre" => pre.round(n).await,
                    _ => now.round(n).await,
                };
            }
            return;
        }
        // Warm up both.
        pre.round(n).await;
        now.round(n).await;
        let (mut pres, mut nows, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..rounds {
            let (p, w) = if r % 2 == 0 {
                let p = pre.round(n).await;
                (p, now.round(n).await)
            } else {
                let w = now.round(n).await;
                (pre.round(n).await, w)
            };
            let (p, w) = (p.as_secs_f64() * 1e3, w.as_secs_f64() * 1e3);
            println!("round {r:2}: before {p:8.2} ms  now {w:8.2} ms  now/before {:.3}", w / p);
            pres.push(p);
            nows.push(w);
            ratios.push(w / p);
        }
        println!(
            "{n} events, {rounds} rounds, {variant}: median before {:.2} ms, now {:.2} ms, median of the rounds' now/before {:.3}",
            median(pres),
            median(nows),
            median(ratios)
        );
    });
}
