# Switchboard: every routine command. `just` alone lists them.
# On a fresh machine use `.ci/just <recipe>`: it installs what is missing first.

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

export PATH := justfile_directory() / ".venv/bin" + ":" + env_var("PATH")
export SB_NATS_PORT := env_var_or_default("SB_NATS_PORT", "4222")
export SB_NATS_MONITOR_PORT := env_var_or_default("SB_NATS_MONITOR_PORT", "8222")
export SB_REDIS_PORT := env_var_or_default("SB_REDIS_PORT", "6379")
export SB_NATS_URL := env_var_or_default("SB_NATS_URL", "nats://127.0.0.1:" + SB_NATS_PORT)

# List the recipes.
_default:
    @just --list --unsorted

# Install what a fresh machine lacks (nats-server, redis-server, espeak-ng, just, SDKs).
bootstrap:
    .ci/bootstrap

# The main job: start everything on loopback, place one scripted call, show it, stop.
demo: bootstrap build
    target/debug/switchboard demo

# Run against the real vendors: needs SB_TWILIO_AUTH_TOKEN, SB_CALL_CREDENTIAL_SECRET, SB_PUBLIC_URL,
# SB_DEEPGRAM_API_KEY, SB_LLM_API_KEY (and SB_AZURE_TTS_KEY + SB_AZURE_TTS_REGION, else espeak-ng speaks).
run: bootstrap build up
    set -a; . .run/secrets.env; set +a; target/debug/switchboard run

# Smoke-check a running local stack (`just up`): topology, tenants, one event, one session.
smoke: build
    set -a; . .run/secrets.env; set +a; SB_NATS_USER=ops SB_NATS_PASSWORD="$SB_NATS_PASSWORD_OPS" target/debug/sb-smoke

# Run every test: unit, per-service, real-server integration, vendor conformance.
test: bootstrap lint docs-check
    cargo build --workspace --all-targets --quiet
    # The service binaries as the stack runs them (without the tests' features), so the
    # end-to-end tests do not compile them inside their time limit.
    cargo build --workspace --bins --quiet
    cargo nextest run --workspace --no-fail-fast --cargo-quiet
    just conformance
    just deploy-check
    just fuzz-smoke

# Check the stand-ins against the vendors' official Python clients.
conformance:
    #!/usr/bin/env bash
    set -euo pipefail
    shopt -s nullglob
    files=(services/*/conformance/test_*.py)
    if ((${#files[@]} == 0)); then echo "conformance: no suites yet"; exit 0; fi
    cargo build --quiet --bins
    # -p no:cloudcoil: the deploy check's CRD models register a pytest plugin we do not use
    # (and whose import needs packages we do not install).
    .venv/bin/python -m pytest -q -p no:cloudcoil "${files[@]}"

# Every section reference (ARCHITECTURE §, PROTOCOLS §) and relative link resolves inside the repo.
docs-check:
    .ci/docs-check

# Render every overlay of deploy/ and check it: schemas, pod security, network paths, alerts (promtool), Dockerfile.
deploy-check:
    .ci/deploy-check

# Fuzz one parser for SECONDS or RUNS executions, whichever first (optimised build; `.ci/fuzz list` names the targets): prints executions, exec/s, corpus, result.
fuzz target seconds="600" runs="-1":
    .ci/fuzz run "$1" "$2" "$3"

# Every fuzz target briefly: its seed corpus, then 10 s of fuzzing each (CI; a crash fails it).
fuzz-smoke:
    .ci/fuzz smoke 10

# Formatting and clippy, warnings are errors.
lint:
    cargo fmt --all -- --check
    cargo fmt --manifest-path fuzz/Cargo.toml -- --check
    cargo clippy --workspace --all-targets --quiet -- -D warnings

# Format the workspace.
fmt:
    cargo fmt --all
    cargo fmt --manifest-path fuzz/Cargo.toml

# Build every binary (debug).
build:
    cargo build --workspace --bins --quiet

# Start NATS (JetStream, file store in .run/, users from nats/auth.conf) and Redis (password,
# AOF everysec, 256mb, volatile-lru) on loopback, then create the streams as the `ops` user.
up: build
    .ci/stack up
    set -a; . .run/secrets.env; set +a; target/debug/switchboard topology apply

# Stop what `just up` started.
down:
    .ci/stack down

# Stage-runner throughput and hop latency through a pass-through stage (real NATS).
bench-runtime *args:
    cargo run --release --quiet -p sb-tests --bin bench-runtime -- "$@"

# Ingress webhook throughput/latency and media frame -> JetStream latency (real NATS + Redis).
bench-ingress *args:
    cargo run --release --quiet -p sb-tests --example bench_ingress -- "$@"

# Replay: show, export and wav of a synthetic 10-minute call (~60,000 events), and the last 50 calls of an index of 100,000 (real NATS).
bench-replay *args:
    cargo run --release --quiet -p sb-tests --bin bench-replay -- "$@"

# Campaign queue: enqueue and pop rates, a small tenant's first pop beside a 1,000,000-contact tenant, memory per contact.
bench-queue *args:
    cargo run --release --quiet -p sb-tests --bin bench-queue -- "$@"

# Outbound campaigns: contacts enqueued/s through the campaigns API (CSV and JSON), then popped-and-dialled/s by two dialer processes against the Twilio stand-in, a small tenant's first call beside 1,000,000 queued, Redis bytes per contact.
bench-dialer *args:
    cargo build --release --quiet --bins -p sb-dialer -p sb-sim -p sb-tests
    target/release/bench-campaign-api
    target/release/bench-dialer "$@"

# Agent + tts pipeline overhead (transcript → first bot audio chunk) at 1/100/500 calls, and TTS cache hit → first chunk.
bench-stages *args:
    cargo run --release --quiet -p sb-tests --example bench_stages -- "$@"

# Load benchmark: N concurrent scripted calls against the whole stack (release build). NATS auth
# is on; `--nats-tls` adds TLS (as in prod), `--nats-no-auth` measures without users.
bench-load calls="100" *args:
    cargo build --release --quiet --bins
    target/release/switchboard load "$@"

# Performance gate: the base commit (BASE, e.g. origin/main) and the working tree, both release builds, under `load CALLS` in alternating rounds; fails when the change is worse beyond run-to-run noise (CI runs it on pull requests).
bench-gate base calls="50" rounds="3":
    .ci/bench-gate "$1" "$2" "$3"

# Chaos: N scripted calls (default 50) against two replicas of every service while each fault (a replica SIGKILLed, nats-server and redis-server restarted, every service rolled) is injected in its own round; prints a table per fault, fails on a dropped call, an unanswered question or a lost event (release build).
chaos calls="50" *args:
    cargo build --release --quiet --bins
    target/release/switchboard chaos --calls "$@"

# The short chaos run: one fault of each kind, 4 calls (the ring-3 test `chaos::` runs the same).
chaos-quick *args:
    cargo build --release --quiet --bins
    target/release/switchboard chaos --quick "$@"

# Soak: 100 concurrent calls replaced as they end for MINUTES (default 30); prints each process' RSS and open descriptors per minute, fails if one grows beyond noise after the warm-up (release build).
soak minutes="30" *args:
    cargo build --release --quiet --bins
    target/release/switchboard soak --minutes "$@"
