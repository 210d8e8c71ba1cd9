#!/usr/bin/env bash
# Schemathesis against /openapi.json of `fascicolo serve --demo`, as each demo account: no 5xx,
# no status code, content type or body that the schema does not describe.
# Usage: .ci/schemathesis.sh PATH_TO_FASCICOLO [SECONDS_PER_ROLE]
set -euo pipefail
binary="$1"
seconds="${2:-45}"
work="$(mktemp -d)"
port=18093
FASCICOLO_DATA_DIR="$work/data" FASCICOLO_LISTEN="127.0.0.1:$port" RUST_LOG=warn \
    "$binary" serve --demo >"$work/demo.out" 2>"$work/demo.err" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
    grep -q "^  auditor  *fsc_" "$work/demo.out" 2>/dev/null && break
    sleep 0.2
done
status=0
for role in citizen professional staff auditor; do
    token="$(awk -v r="$role" '$1 == r && $2 ~ /^fsc_/ {print $2}' "$work/demo.out")"
    [ -n "$token" ] || { echo "no demo token for $role"; exit 1; }
    echo "--- schemathesis as the demo $role, ${seconds}s"
    # Revoking its own token would end the run early: that one operation is left out.
    if ! schemathesis run "http://127.0.0.1:$port/openapi.json" \
        -H "Authorization: Bearer $token" \
        --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
        --exclude-path '/v1/tokens/{id}' \
        --max-time "$seconds" --workers 2 --seed 1 >"$work/st-$role.log" 2>&1; then
        status=1
        grep -E "^_+ |Received|Documented|ST[0-9]+ " "$work/st-$role.log" | head -60
    fi
    tail -4 "$work/st-$role.log"
done
exit $status
