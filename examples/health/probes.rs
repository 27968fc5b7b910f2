//! Readiness and liveness endpoints for a service's bus, on axum: mount [`router`] into the
//! service's own app. Kubernetes (or any orchestrator) asks `/health/live` whether to
//! restart the process and `/health/ready` whether to send it traffic; both answer with the
//! bus's [`Health`] as JSON.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use tidings::{Bus, Health};

/// `/health/live` and `/health/ready` for `bus`: 200 when live (ready), 503 otherwise.
pub fn router(bus: Bus) -> Router {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(bus)
}

/// Live while the bus runs and no subscription has stopped; reconnecting is still live.
async fn live(State(bus): State<Bus>) -> (StatusCode, Json<Health>) {
    answer(bus.health(), Health::is_live)
}

/// Ready while every subscription is consuming.
async fn ready(State(bus): State<Bus>) -> (StatusCode, Json<Health>) {
    answer(bus.health(), Health::is_ready)
}

fn answer(health: Health, ok: fn(&Health) -> bool) -> (StatusCode, Json<Health>) {
    let status = if ok(&health) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(health))
}
