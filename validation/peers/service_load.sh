#!/usr/bin/env bash
# Open-loop fixed-rate load on the service's read endpoints while deviation jobs run.
#
#   validation/peers/service_load.sh [RATE_PER_SECOND] [SECONDS]
#
# Builds a small normative database with `pedinorm demo` (MNI base at 2 mm, 8 normals, one
# bracket), writes a synthetic case as an identified DICOM series (`pedinorm synth --dicom`),
# starts `pedinorm serve` with that database, uploads the case with consent, opens a case,
# queues deviation maps back to back (one runs at a time, using both cores), and while one is
# running drives the read endpoints with `fixed_rate_load` (open loop: latency measured from
# each request's due time). Prints the load generator's JSON, the load average around the run
# and the deviation jobs that ran during it.
#
# Binaries: PEDINORM_BIN (default target/release/pedinorm) and PEDINORM_LOAD_BIN (default
# target/release/fixed_rate_load); build both with `cargo build --release`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
rate="${1:-200}"
seconds="${2:-30}"
bin="${PEDINORM_BIN:-$root/target/release/pedinorm}"
load="${PEDINORM_LOAD_BIN:-$root/target/release/fixed_rate_load}"
work="$(mktemp -d)"
source "$root/scripts/services/serve.sh"
trap 'stop_service; rm -rf "$work"' EXIT
json() { python3 -c "import json,sys; v=json.load(sys.stdin); print($1)"; }

echo "normative database (pedinorm demo, 2 mm, 8 normals)…" >&2
"$bin" demo --out-dir "$work/demo" --normals 8 --cases 1 --resolution 2 --min-age 6 --max-age 10 \
  --brackets 1 --held-out-normals 0 --template-iterations 1 --data-dir "$root/.data" >"$work/demo.log" 2>&1
echo "synthetic case as DICOM…" >&2
"$bin" synth --n 1 --cases 1 --ages 7-9 --resolution 2 --seed 11 --dicom --national-id --no-warps \
  --base-dir "$root/.data/mni" --out-dir "$work/case" >"$work/synth.log" 2>&1
dicom_dir="$work/case/$(python3 -c '
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
cases = [r for r in rows if r["kind"] != "normal"] or rows
print(cases[0]["dicom"])' "$work/case/cohort.csv")"
(cd "$dicom_dir" && python3 -m zipfile -c "$work/case.zip" .)

printf '0123456789abcdef0123456789abcdef0123456789abcdef' >"$work/pseudonym.key"
cat >"$work/pedinorm.toml" <<EOF
data_dir = "state"
listen = "127.0.0.1:0"
normdb = "demo/normdb.h5"
pseudonym_key_file = "pseudonym.key"
national_id_issuer = "SYNTHETIC-CF"
[jobs]
concurrency = 1
max_queued = 500
EOF
radiologist="$("$bin" users add --data-dir "$work/state" --name load-rad --role radiologist --centre C1)"
start_service "$bin" "$work" --config "$work/pedinorm.toml"
auth="Authorization: Bearer $radiologist"

submitted="$(curl -sf -H "$auth" -F 'consent={"database_a":true,"database_b":false,"research_use":true,"date":"2024-01-02"}' \
  -F "file=@$work/case.zip;type=application/zip" "$base/api/v1/studies?database=A")"
study="$(echo "$submitted" | json 'v["study"]["id"]')"
ingest="$(echo "$submitted" | json 'v["job"]')"
for _ in $(seq 1 600); do
  state="$(curl -sf -H "$auth" "$base/api/v1/jobs/$ingest" | json 'v["state"]')"
  [ "$state" = done ] || [ "$state" = failed ] && break
  sleep 0.2
done
[ "$state" = done ] || { echo "ingest $state" >&2; exit 1; }
case_id="$(curl -sf -H "$auth" -H 'Content-Type: application/json' -d "{\"study_id\": $study}" \
  "$base/api/v1/cases" | json 'v["id"]')"
# Enough deviation maps to keep one running through the whole measurement.
jobs=()
for _ in $(seq 1 40); do
  jobs+=("$(curl -sf -X POST -H "$auth" "$base/api/v1/cases/$case_id/deviation" | json 'v["job"]')")
done
for _ in $(seq 1 600); do
  state="$(curl -sf -H "$auth" "$base/api/v1/jobs/${jobs[0]}" | json 'v["state"]')"
  [ "$state" = running ] && break
  sleep 0.1
done
sleep 1

echo "load: $rate requests/s for $seconds s while deviation jobs run" >&2
uptime >"$work/uptime.txt"
( while sleep 5; do uptime; done ) >>"$work/uptime.txt" &
sampler=$!
"$load" --address "$address" --rate "$rate" --seconds "$seconds" --connections 16 --header "$auth" \
  --path "/api/v1/jobs?limit=20" --path "/api/v1/cases/$case_id" --path "/api/v1/studies/$study" \
  --path "/ready" --path "/api/v1/normdb" | tee "$work/load.json"
kill "$sampler" 2>/dev/null || true
uptime >>"$work/uptime.txt"
echo "load average during the run:" >&2
cat "$work/uptime.txt" >&2
curl -sf -H "$auth" "$base/api/v1/jobs?limit=100" | python3 -c '
import json, sys
jobs = [j for j in json.load(sys.stdin) if j["kind"] == "deviation"]
done = [j for j in jobs if j["state"] == "done"]
running = [j for j in jobs if j["state"] == "running"]
failed = [j for j in jobs if j["state"] == "failed"]
print(f"deviation jobs: {len(done)} done, {len(running)} running, {len(failed)} failed", file=sys.stderr)
if done:
    import datetime
    t = lambda s: datetime.datetime.fromisoformat(s[:26].rstrip("Z"))
    spans = [(t(j["finished"]) - t(j["started"])).total_seconds() for j in done]
    print(f"deviation job wall time: median {sorted(spans)[len(spans)//2]:.2f} s", file=sys.stderr)
'
