#!/usr/bin/env bash
# Transfer to an unseen scanner site: a normative database built from normals of sites S1–S3
# (the README demo's cohort, 0–17 years, every default bracket), scored on normals and cases of
# a site S4 it has never seen (other contrast, blur, noise, bias and anatomy seeds), once with
# the site-aware model and once with every site pooled as one. Prints the false-positive and
# detection figures of both side by side (summary.json of each run is kept in WORK/on and
# WORK/off). The second run reuses the first run's templates (resumable template builds).
#
#   validation/peers/site_transfer.sh WORK [extra pedinorm demo arguments]
set -euo pipefail
cd "$(dirname "$0")/../.."
work="${1:?usage: $0 WORK [demo arguments]}"
shift
cargo build -q --release --bin pedinorm
bin="${CARGO_TARGET_DIR:-target}/release/pedinorm"
common=(--held-out-normals 14 --held-out-cases 6 --cases 6 "$@")
mkdir -p "$work"
"$bin" demo --out-dir "$work/run" "${common[@]}" >"$work/on.log" 2>&1
mkdir -p "$work/on" && cp "$work/run/summary.json" "$work/on/summary.json"
"$bin" demo --out-dir "$work/run" "${common[@]}" --no-site-model >"$work/off.log" 2>&1
mkdir -p "$work/off" && cp "$work/run/summary.json" "$work/off/summary.json"
.data/venv/bin/python - "$work" <<'PY'
import json, sys, statistics
work = sys.argv[1]
rows = []
for mode in ("off", "on"):
    s = json.load(open(f"{work}/{mode}/summary.json"))
    h = s["held_out"]
    auc = lambda cases: statistics.median(c["voxel_auc"] for c in cases) if cases else float("nan")
    det = lambda cases: f'{sum(c["detected"] for c in cases)}/{len(cases)}'
    vr = {r["channel"]: r for r in h["voxel_rates"]}
    rows.append((mode, vr["intensity"]["achieved"] / vr["intensity"]["nominal"],
                 vr["logjac"]["achieved"] / vr["logjac"]["nominal"], h["cluster_rate"], h["nominal_cluster_rate"],
                 sum(1 for n in h["normals"] if n["significant_clusters"] > 0 and not n["flagged_unreliable"]) / len(h["normals"]),
                 h["flagged_rate"], auc(s["cases"]), det(s["cases"]), auc(s["held_out_cases"]), det(s["held_out_cases"])))
print("| site model | S4 voxel FPR / nominal, intensity | logjac | S4 normals with a significant cluster (nominal) | ... without the unreliable caveat | S4 normals flagged | lesion AUC in-site (median) | detected in-site | AUC S4 | detected S4 |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]:.2f}x | {r[2]:.2f}x | {100*r[3]:.0f} % ({100*r[4]:.0f} %) | {100*r[5]:.0f} % | {100*r[6]:.0f} % | {r[7]:.3f} | {r[8]} | {r[9]:.3f} | {r[10]} |")
PY
