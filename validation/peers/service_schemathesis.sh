#!/usr/bin/env bash
# Bounded schemathesis run against a live pedinorm service and its /openapi.json.
#
#   validation/peers/service_schemathesis.sh [MAX_EXAMPLES]
#
# Starts `pedinorm serve` on a free loopback port with a temporary data directory, creates an
# admin token, runs schemathesis (installed in .data/venv) with that token, and fails when any
# response is a server error (5xx) or does not match the documented schema/status codes.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
max_examples="${1:-25}"
bin="${PEDINORM_BIN:-$root/target/debug/pedinorm}"
python="$root/.data/venv/bin/python"
st="$root/.data/venv/bin/schemathesis"
[ -x "$st" ] || "$python" -m pip install --quiet schemathesis
work="$(mktemp -d)"
source "$root/scripts/services/serve.sh"
trap 'stop_service; rm -rf "$work"' EXIT

token="$("$bin" users add --data-dir "$work/state" --name schemathesis --role admin --centre C1)"
start_service "$bin" "$work" --data-dir "$work/state" --listen 127.0.0.1:0
echo "service at $base" >&2

# not_a_server_error: no 5xx; status_code_conformance / response_schema_conformance: the
# answers match the OpenAPI document.
# From the temporary folder: schemathesis keeps its state in ./.schemathesis.
cd "$work"
"$st" run "$base/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,status_code_conformance,response_schema_conformance \
  --max-examples "$max_examples" \
  --max-time 240 \
  --request-timeout 10 \
  --workers 2 \
  --seed 1 \
  2>&1 | tee "$work/schemathesis.txt"
status=${PIPESTATUS[0]}
if grep -q '" 500\| 500 ' "$work/server.log"; then
  echo "the server logged an internal error" >&2
  status=1
fi
exit "$status"
