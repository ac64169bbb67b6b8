#!/usr/bin/env bash
# The XDP fast path (issue 18), built with the `xdp` cargo feature: Debian's clang and libbpf
# headers compile the BPF program. Then, as root (network namespaces joined by veth pairs):
#   * tests/xdp_kernel.rs: the program alone, routes written by hand, real sockets each side;
#   * tests/fast_path.rs: the differential test (the same scripted traffic through turnd with
#     and without the fast path arrives identically) and metrics/usage agreeing with it;
#   * tests/fast_path_fallback.rs: capabilities dropped, no native XDP, no such interface:
#     turnd says why and relays in userspace.
# Lints the feature's code too (the default build never compiles it). Bounded: each test
# stops by itself, the whole step takes a few minutes (most of it the feature build).
set -euo pipefail
cd "$(dirname "$0")/../.."

source tests/interop/lib.sh
need_debian clang clang
if [ ! -f /usr/include/bpf/bpf_helpers.h ]; then
  echo "installing Debian's libbpf-dev (for bpf_helpers.h)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libbpf-dev >/dev/null
fi
need_debian iproute2 ip
need_debian libcap2-bin capsh
# tests/common/relay_topology.rs turns transmit checksum offload off on the outside veth.
need_debian ethtool ethtool

cargo clippy -q --features xdp --all-targets -- -D warnings
cargo test -q --features xdp --test xdp_kernel --test fast_path --test fast_path_fallback
