"""The side-by-side table of validation/peers/site_transfer.sh from WORK/on and WORK/off.

    site_transfer_table.py WORK

"With safeguards" counts only the held-out normals the out-of-distribution check let through:
a normal flagged unreliable has every map and cluster declared not a finding.
"""
import json
import statistics
import sys


def row(mode, summary):
    held = summary["held_out"]
    normals = held["normals"]
    nominal = {r["channel"]: r["nominal"] for r in held["voxel_rates"]}
    channels = [r["channel"] for r in held["voxel_rates"]]

    def voxel_ratio(subset, channel):
        k = channels.index(channel)
        return statistics.mean(n["voxel_rate"][k] for n in subset) / nominal[channel] if subset else float("nan")

    passed = [n for n in normals if not n["flagged_unreliable"]]
    auc = lambda cases: statistics.median(c["voxel_auc"] for c in cases) if cases else float("nan")
    det = lambda cases: f'{sum(c["detected"] for c in cases)}/{len(cases)}'
    share = lambda subset, pred: 100.0 * sum(1 for n in subset if pred(n)) / len(normals)
    return (
        f"| {mode} | {voxel_ratio(normals, 'intensity'):.2f}x / {voxel_ratio(normals, 'logjac'):.2f}x "
        f"| {share(normals, lambda n: n['significant_clusters'] > 0):.0f} % "
        f"| {voxel_ratio(passed, 'intensity'):.2f}x / {voxel_ratio(passed, 'logjac'):.2f}x "
        f"| {share(passed, lambda n: n['significant_clusters'] > 0):.0f} % "
        f"| {100.0 * held['flagged_rate']:.0f} % "
        f"| {auc(summary['cases']):.3f} ({det(summary['cases'])}) "
        f"| {auc(summary['held_out_cases']):.3f} ({det(summary['held_out_cases'])}) |"
    )


def main():
    work = sys.argv[1]
    print("| site model | S4 normals: voxel FPR / nominal (intensity / logjac) | S4 normals with a significant cluster "
          "(nominal 5 %) | the same with safeguards: voxel FPR / nominal | ... with a significant cluster and no caveat "
          "| S4 normals flagged unreliable | in-site cases: median voxel AUC (detected) | S4 cases: median voxel AUC "
          "(detected) |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in ("off", "on"):
        with open(f"{work}/{mode}/summary.json") as f:
            print(row(mode, json.load(f)))


if __name__ == "__main__":
    main()
