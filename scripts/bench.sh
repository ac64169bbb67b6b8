#!/usr/bin/env bash
# Benchmark: turnd, Debian's coturn and the floor forwarder, side by side on this machine
# (bench/: the load generator, the floor and the table), and turnd's XDP fast path over a veth
# pair between two private network namespaces. Regenerates BENCHMARKS.md.
#   scripts/bench.sh            # the full run (about 12 minutes), writes BENCHMARKS.md
#   scripts/bench.sh --short    # CI: every measurement, briefly, to prove the benchmark works;
#                               # prints the tables, writes nothing
# Loopback and private namespaces only; every load is bounded in time. Needs two CPUs (server on
# 0, load on 1) and root (the namespaces, XDP).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/interop/lib.sh
need_debian coturn turnserver
need_debian util-linux taskset
need_debian iproute2 ip
need_debian bpftool bpftool
if [ "$(nproc)" -lt 2 ]; then
  echo "bench: needs at least two CPUs (the server on one, the load generator on the other)"; exit 1
fi
target=${CARGO_TARGET_DIR:-target}
mkdir -p "$target"
# turnd with the XDP fast path for the veth group: the `xdp` feature compiles the BPF program
# with clang and libbpf's headers. Where the feature or the build is missing, the group's
# fast-path column says "unavailable" and everything else is measured.
rm -f "$target/release/turnd-xdp"
if grep -qE '^xdp *=' Cargo.toml; then
  need_debian clang clang
  if [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libbpf-dev >/dev/null
  fi
fi
# The README's build command for the fast path, as written.
if cargo build -q --release --features xdp 2>"$target/turnd-xdp-build.log"; then
  cp "$target/release/turnd" "$target/release/turnd-xdp"
else
  echo "bench: no turnd with --features xdp: $(grep -m1 -i error "$target/turnd-xdp-build.log" || true)"
  # CI must measure the fast path: a broken feature build fails the step.
  [ -z "${CI:-}" ] || { cat "$target/turnd-xdp-build.log"; exit 1; }
fi
cargo build -q --release -p turnd --bin turnd
cargo build -q --release -p turnd-bench
if [ "${1:-}" = "--short" ]; then
  exec "$target/release/turnd-bench" run --short
fi
exec "$target/release/turnd-bench" run --out BENCHMARKS.md
