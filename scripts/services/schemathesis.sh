#!/usr/bin/env bash
# Contract test of the running service with schemathesis, as the scientist, radiologist and
# auditor roles: starts `pedinorm serve` on a fresh private data directory (embedded defaults
# plus a high anonymous allowance, so the unauthenticated probes of `ignored_auth` are not
# answered 429), creates one user per role and runs `schemathesis run --checks all` against
# /openapi.json for each, with the settings of schemathesis.toml beside this script (422 is an
# answer to schema-valid data that breaks a rule stated in prose). Prints one summary line per
# role; exits non-zero on any failure. SCHEMATHESIS_KEEP=DIR keeps each role's full report.
#
# usage: scripts/services/schemathesis.sh PEDINORM_BINARY SCHEMATHESIS_BINARY [MAX_EXAMPLES]
# (schemathesis 4.32.5, installed by scripts/setup.sh in .data/schemathesis)
set -euo pipefail
binary=$1
schemathesis=$2
examples=${3:-50}
work=$(mktemp -d)
source "$(dirname "$0")/serve.sh"
cleanup() {
  stop_service
  if [ -n "${SCHEMATHESIS_KEEP:-}" ]; then cp "$work"/*.txt "$SCHEMATHESIS_KEEP"/ || true; fi
  rm -rf "$work" || true
}
trap cleanup EXIT
mkdir -m 700 "$work/state"
cat > "$work/pedinorm.toml" <<TOML
data_dir = "state"
listen = "127.0.0.1:0"
anonymous_requests_per_minute = 1000000
TOML
declare -A token
for role in scientist radiologist auditor; do
  token[$role]=$("$binary" users add --data-dir "$work/state" --name "st-$role" --role "$role" --centre C1)
done
start_service "$binary" "$work" --config "$work/pedinorm.toml"
status=0
for role in scientist radiologist auditor; do
  if "$schemathesis" --config-file "$(dirname "$0")/schemathesis.toml" run "$base/openapi.json" --checks all --max-examples "$examples" --seed 1 \
      --no-color --header "Authorization: Bearer ${token[$role]}" > "$work/$role.txt" 2>&1; then
    result=passed
  else
    result=FAILED
    status=1
  fi
  echo "$role: $result — $(grep -E '^[0-9]+ (passed|failed)|passed|failed' "$work/$role.txt" | tail -1)"
  [ "$result" = passed ] || tail -60 "$work/$role.txt"
done
exit $status
