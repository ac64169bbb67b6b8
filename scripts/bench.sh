#!/usr/bin/env bash
# Benchmark: turnd, Debian's coturn and the floor forwarder, side by side on this machine
# (bench/: the load generator, the floor and the table). Regenerates BENCHMARKS.md.
#   scripts/bench.sh            # the full run (about 6 minutes), writes BENCHMARKS.md
#   scripts/bench.sh --short    # CI: every measurement, briefly, to prove the benchmark works;
#                               # prints the table, writes nothing
# Loopback only; every load is bounded in time. Needs two CPUs (server on 0, load on 1).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/interop/lib.sh
need_debian coturn turnserver
need_debian util-linux taskset
if [ "$(nproc)" -lt 2 ]; then
  echo "bench: needs at least two CPUs (the server on one, the load generator on the other)"; exit 1
fi
cargo build -q --release -p turnd --bin turnd
cargo build -q --release -p turnd-bench
if [ "${1:-}" = "--short" ]; then
  exec target/release/turnd-bench run --short
fi
exec target/release/turnd-bench run --out BENCHMARKS.md
