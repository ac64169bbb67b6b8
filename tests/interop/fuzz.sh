#!/usr/bin/env bash
# Fuzzing: replays every target's corpus, then fuzzes each target briefly (FUZZ_SECONDS, 20 s
# by default). Targets: the STUN decoder, ChannelData, the stream framer and the whole
# proto::Server (fuzz/). Corpora: the RFC 5769 vectors (taken from proto/tests/rfc5769.rs),
# real packets of coturn's turnutils_uclient (fuzz/seeds/, recorded by fuzz/capture_seeds.py),
# and fuzz/corpus/server (a set-cover-minimised corpus from longer local runs).
# cargo fuzz needs -Z flags; the machine has stable Rust only, so RUSTC_BOOTSTRAP=1 lets the
# stable compiler accept them. No sanitizer: turnd-proto has no unsafe code, and the
# invariants are asserted by the targets themselves. -a keeps debug assertions (and overflow
# checks) in the optimised build: the server's own invariant checks are debug_assert!s
# (`Server::check_invariants`, run by the harness after every step). Bounded:
# -max_total_time per target.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v cargo-fuzz >/dev/null 2>&1 || cargo install -q cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
SECS=${FUZZ_SECONDS:-20}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for t in stun_decoder channel_data stream_framer server; do mkdir -p "$work/$t"; done
# RFC 5769's test vectors, exactly as the conformance tests spell them.
python3 - "$work/stun_decoder" <<'PY'
import re, sys
src = open("proto/tests/rfc5769.rs").read()
for i, h in enumerate(re.findall(r'hex\("([0-9a-f\s]+)"\)', src)):
    open(f"{sys.argv[1]}/rfc5769-{i}", "wb").write(bytes.fromhex("".join(h.split())))
PY
test "$(ls "$work/stun_decoder" | wc -l)" -ge 4 || { echo "fuzz: RFC 5769 vectors not found"; exit 1; }
cp fuzz/seeds/coturn-uclient/udp-* "$work/stun_decoder/"
cp fuzz/seeds/coturn-uclient/udp-* "$work/channel_data/"
# The framer's input: two bytes that choose how the stream is cut, then the stream.
for f in fuzz/seeds/coturn-uclient/tcp-*; do
  { printf '\x12\x34'; cat "$f"; } >"$work/stream_framer/$(basename "$f")"
done

cd fuzz
cargo test -q
cargo clippy -q --lib --tests -- -D warnings
cargo fuzz build -s none -O -a
for t in stun_decoder channel_data stream_framer server; do
  corpora=("$work/$t")
  [ -d "corpus/$t" ] && corpora+=("corpus/$t")
  echo "fuzz: $t: replaying $(find "${corpora[@]}" -type f | wc -l) corpus inputs"
  cargo fuzz run -s none -O -a "$t" "${corpora[@]}" -- -runs=0 2>&1 | tail -1
  echo "fuzz: $t: ${SECS}s of fuzzing"
  cargo fuzz run -s none -O -a "$t" "${corpora[@]}" -- -max_total_time="$SECS" -print_final_stats=0 2>&1 | grep -E "^#[0-9]+.*DONE|^Done" | tail -1
done
