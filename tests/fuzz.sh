#!/bin/sh
# Runs the parser property tests (every test named fuzz_*: share tail and
# footer, capability string, NURL, CBOR answers, certificate reader, the
# PROPFIND completion) with
# many cases each. cargo-fuzz needs a nightly compiler; proptest with
# arbitrary bytes runs on stable. Usage: tests/fuzz.sh [cases per test]
# (default 1,000,000). A failure prints the minimal input and is saved
# under proptest-regressions/ so that every later `cargo test` replays it.
set -eu
cd "$(dirname "$0")/.."
cases="${1:-1000000}"
cargo test --lib --no-run
for test in \
    engine::layout::tests::fuzz_share_tail_arbitrary_bytes \
    engine::layout::tests::fuzz_share_tail_round_trips \
    engine::cap::tests::fuzz_capability_arbitrary_text \
    engine::cap::tests::fuzz_capability_round_trips \
    grid::tahoe::nurl::tests::fuzz_nurl_arbitrary_text \
    grid::tahoe::nurl::tests::fuzz_nurl_round_trips \
    grid::tahoe::nurl::tests::fuzz_certificate_arbitrary_bytes \
    grid::tahoe::nurl::tests::fuzz_certificate_mutations \
    grid::tahoe::cbor::tests::fuzz_cbor_arbitrary_bytes \
    grid::tahoe::cbor::tests::fuzz_cbor_arbitrary_values \
    grid::tahoe::cbor::tests::fuzz_cbor_answers_round_trip \
    dav::complete::tests::fuzz_completion_arbitrary_bytes \
    dav::complete::tests::fuzz_completion_keeps_every_meaning
do
    start=$(date +%s)
    PROPTEST_CASES="$cases" cargo test --lib -q -- --exact "$test"
    echo "$test: $cases cases in $(( $(date +%s) - start )) s"
done
