#!/usr/bin/env bash
# tidings before and after its telemetry, in one process each: the working tree's core
# (without, then with its opentelemetry feature) against the core of commit PRE (default:
# the parent of the telemetry commit), on the memory transport with nothing listening.
# See baseline.rs. Builds in a temporary directory (release, a target dir of its own, about
# 1 GB, removed at the end); the git dependency is this repository at PRE.
#
#   benches/telemetry-baseline/run.sh            # 15 rounds of 100 000 events
#   TIDINGS_BENCH_ROUNDS=25 PRE=<commit> benches/telemetry-baseline/run.sh
#   CALLGRIND=1 benches/telemetry-baseline/run.sh  # and instructions an event per side
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PRE="${PRE:-$(git -C "$ROOT" rev-parse 9c4bdd5^)}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/tidings-telemetry-baseline.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/src"
cp "$ROOT/benches/telemetry-baseline/baseline.rs" "$WORK/src/main.rs"
cat >"$WORK/Cargo.toml" <<TOML
[package]
name = "tidings-telemetry-baseline"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[features]
opentelemetry = ["now_core/opentelemetry"]

[dependencies]
now_core = { package = "tidings-core", path = "$ROOT/crates/tidings-core" }
now_memory = { package = "tidings-memory", path = "$ROOT/crates/tidings-memory" }
pre_core = { package = "tidings-core", git = "file://$ROOT", rev = "$PRE" }
pre_memory = { package = "tidings-memory", git = "file://$ROOT", rev = "$PRE" }
serde = { version = "1", features = ["derive"] }
tokio = { version = "1", features = ["rt-multi-thread", "macros", "sync", "time"] }
TOML
cd "$WORK"
echo "before: $PRE; now: the working tree of $ROOT ($(git -C "$ROOT" rev-parse --short HEAD))"
for features in "" "--features opentelemetry"; do
    # shellcheck disable=SC2086  # the features are two words or none
    cargo run --quiet --release --target-dir "$WORK/target" $features
    if [ -n "${CALLGRIND:-}" ]; then
        # Instructions an event of each side alone: 2 rounds of 20 000 events, set-up
        # included.
        for side in pre now; do
            TIDINGS_BENCH_ONLY=$side TIDINGS_BENCH_EVENTS=20000 TIDINGS_BENCH_ROUNDS=2 \
                valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.$side" \
                "$WORK/target/release/tidings-telemetry-baseline" 2>"$WORK/callgrind.log"
            total="$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$WORK/callgrind.log")"
            echo "callgrind, $side${features:+ ($features)}: $((total / 40000)) instructions an event"
        done
    fi
done
