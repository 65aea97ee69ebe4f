#!/usr/bin/env bash
# The HTTP property test (tests/http_model.rs) for longer than `cargo test`
# runs it: GRIDDAV_MODEL_CASES cases (default 2000) of up to 40 random
# requests each against one real server. Run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
GRIDDAV_MODEL_CASES=${GRIDDAV_MODEL_CASES:-2000} \
    cargo test --test http_model -- --nocapture
