#!/bin/bash
# tmt test /plans/tests/in-place: crlab's scenario catalog on this machine (cargo xtask
# vm-test --in-place), one shard of it when CRLAB_SHARD=I/N; keeps report.json and
# junit.xml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
args=(--in-place)
if [ -n "${CRLAB_SHARD:-}" ]; then
    args+=(--shard "$CRLAB_SHARD")
fi
status=0
cargo xtask vm-test "${args[@]}" || status=$?
for keep in "${TMT_PLAN_DATA:-}" "${TMT_TEST_DATA:-}"; do
    [ -n "$keep" ] || continue
    mkdir -p "$keep"
    for f in report.json junit.xml; do
        if [ -f "target/crlab/$f" ]; then
            cp "target/crlab/$f" "$keep/"
        fi
    done
done
exit "$status"
