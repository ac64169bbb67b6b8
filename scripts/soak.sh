#!/usr/bin/env bash
# Soak: allocation churn plus relayed traffic against a release turnd for SECONDS (default
# 600), checking memory, open files, errors and loss (examples/soak.rs). Loopback only.
#   scripts/soak.sh          # ten minutes
#   scripts/soak.sh 20       # a short run (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q --release --bin turnd --example soak
exec target/release/examples/soak --seconds "${1:-600}" --clients "${SOAK_CLIENTS:-16}"
