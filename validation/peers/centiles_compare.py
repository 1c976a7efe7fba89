#!/usr/bin/env python3
"""Centile models of regional measures: pedinorm against PCNtoolkit's warped BLR.

Data: made by this script's own generator (numpy; nothing of pedinorm's synthetic cohort or of
its sinh-arcsinh family). 20 regional measures with different growth shapes (fast growth in
the first two years then a plateau, saturating growth, a rise then a decline, linear growth),
sex ratios that grow after puberty for some measures, skewed and heteroscedastic noise drawn
from gamma and log-normal-mixture families (spread larger in infants), ages 0-18 with more
infants than a uniform draw (age = 18 u^1.6: 16 % under 1 y, 33 % under 3 y), and scanner
sites with their own gain and offset:
  * train: sites A, B, C (~1,000 normals);
  * held: held-out normals of A, B, C (3,000);
  * new site D (gain 1.12, offset +3 % of the adult median): adaptation sets of 10, 25 and
    50 normals (the smaller ones are the first rows of the larger) and 2,000 held-out normals.

Runs, on the same TSVs:
  * pedinorm: `centiles fit` on train, `score` on held and on D's held-out normals before
    adaptation (D is an unknown site: population curves), `adapt --site D` with each
    adaptation set, `score` again;
  * PCNtoolkit 1.3 BLR as its documentation sets up a warped model: B-spline basis of age for
    the mean and the variance (cubic, 5 knots, here at age quantiles, its option for unevenly
    sampled covariates), heteroskedastic, WarpSinhArcsinh (reparameterized), L-BFGS-B with
    1,000 iterations, sex and site as batch effects with fixed effects on the mean;
    `NormativeModel.transfer` with each adaptation set for D (its transfer for BLR: a
    per-batch mean shift and a variance factor in the warped space). Before transfer, D's
    normals are scored as if they came from site A (a model knows only its training sites).

Figures (held-out normals only): % below the 2.5th and above the 97.5th centile, pooled over
the 20 measures, overall and per age bracket (0-1, 1-3, 3-8, 8-18 y), and the worst measure;
MSLL = mean over values of (negative log density of the model - that of a normal with the
mean and SD of the measure's training values), both on the measure's own scale (PCNtoolkit's
log densities are on its standardized scale; the same affine change cancels in the
difference); wall time of each fit. Speed run: `pedinorm centiles fit` on 100 measures x 1,000
subjects from the same generator.

Usage (PCNtoolkit's own venv has numpy, scipy and pandas):
  .data/pcntoolkit/bin/python validation/peers/centiles_compare.py \
      --pedinorm target/release/pedinorm --work /tmp/centcmp [--seed 17] [--skip-pcntoolkit]
      [--skip-speed] [--fit-args '--location-knots 8 --scale-knots 4']
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

BRACKETS = [(0.0, 1.0), (1.0, 3.0), (3.0, 8.0), (8.0, 18.01)]
SITES = {"A": (1.00, 0.00), "B": (0.95, 0.02), "C": (1.05, -0.015)}
NEW_SITE = ("D", 1.12, 0.03)
ADAPT_SIZES = [10, 25, 50]
PCN_KNOTS = 5
PCN_KNOT_METHOD = "quantile"


# ---------------------------------------------------------------- generator


def measure_specs(n_measures, rng):
    """Parameters of `n_measures` measures cycling through growth shapes and noise families."""
    base = [
        # name, shape, adult median (ml), shape parameter, male ratio, late male ratio, cv, noise
        ("total_brain", "steep", 1250.0, 1.2, 1.09, 0.0, 0.07, "gamma"),
        ("cerebral_wm", "steep", 480.0, 2.0, 1.10, 0.03, 0.09, "lognormal_mix"),
        ("cortical_gm", "rise_decline", 650.0, 0.08, 1.08, 0.0, 0.08, "gamma"),
        ("deep_gm", "rise_decline", 55.0, 0.05, 1.07, 0.0, 0.08, "lognormal_mix"),
        ("cerebellum", "steep", 145.0, 0.9, 1.06, 0.0, 0.09, "gamma_left"),
        ("brainstem", "saturating", 28.0, 3.0, 1.05, 0.02, 0.08, "gamma"),
        ("lateral_ventricles", "linear", 14.0, 0.05, 1.15, 0.0, 0.40, "lognormal_mix"),
        ("third_ventricle", "linear", 1.1, 0.04, 1.12, 0.0, 0.30, "gamma"),
        ("hippocampus_l", "saturating", 4.1, 2.0, 1.05, 0.0, 0.10, "gamma_left"),
        ("hippocampus_r", "saturating", 4.2, 2.0, 1.05, 0.0, 0.10, "lognormal_mix"),
        ("amygdala_l", "saturating", 1.7, 3.5, 1.06, 0.04, 0.12, "gamma"),
        ("amygdala_r", "saturating", 1.75, 3.5, 1.06, 0.04, 0.12, "lognormal_mix"),
        ("thalamus", "rise_decline", 16.0, 0.03, 1.06, 0.0, 0.08, "gamma"),
        ("caudate", "rise_decline", 8.0, 0.06, 1.07, 0.0, 0.10, "gamma_left"),
        ("putamen", "rise_decline", 11.0, 0.05, 1.08, 0.0, 0.09, "lognormal_mix"),
        ("corpus_callosum", "saturating", 18.0, 6.0, 1.03, 0.0, 0.11, "gamma"),
        ("frontal_gm", "rise_decline", 210.0, 0.1, 1.08, 0.0, 0.09, "lognormal_mix"),
        ("occipital_gm", "steep", 95.0, 0.8, 1.07, 0.0, 0.09, "gamma"),
        ("extra_axial_csf", "linear", 120.0, 0.03, 1.10, 0.0, 0.35, "gamma"),
        ("cerebellar_wm", "steep", 30.0, 2.5, 1.06, 0.02, 0.10, "gamma_left"),
    ]
    specs = []
    for i in range(n_measures):
        name, shape, adult, p, male, late, cv, noise = base[i % len(base)]
        if i >= len(base):
            # Further copies differ in size, tempo and spread.
            name = f"{name}_{i // len(base)}"
            adult *= float(rng.uniform(0.6, 1.5))
            p *= float(rng.uniform(0.7, 1.4))
            cv *= float(rng.uniform(0.8, 1.25))
        specs.append(dict(name=name, shape=shape, adult=adult, p=p, male=male, late=late, cv=cv, noise=noise))
    return specs


def median_curve(spec, age):
    """The measure's median of girls at `age` (years)."""
    a, p = spec["adult"], spec["p"]
    if spec["shape"] == "steep":  # birth at 30 % of adult, most growth in the first 2 years
        return a * (1.0 - 0.7 * np.exp(-age / p))
    if spec["shape"] == "saturating":  # Hill curve from 35 % at birth
        return a * (0.35 + 0.65 * age**1.5 / (age**1.5 + p**1.5))
    if spec["shape"] == "rise_decline":  # fast rise, peak at 4-8 y, then a slow decline
        return a * (1.0 - 0.65 * np.exp(-age / 0.9)) * np.exp(-p * np.maximum(age - 6.0, 0.0) ** 1.3 / 6.0)
    if spec["shape"] == "linear":
        return a * (0.45 + p * age * 1.6)
    raise ValueError(spec["shape"])


def noise(spec, age, rng):
    """Multiplicative relative deviations: skewed, heavier spread in infants."""
    n = age.shape[0]
    cv = spec["cv"] * (1.0 + 0.8 * np.exp(-age / 1.5))
    family = spec["noise"]
    if family in ("gamma", "gamma_left"):
        k = 6.0  # skewness 2/sqrt(6) = 0.82
        e = (rng.gamma(k, 1.0, n) - k) / np.sqrt(k)
        if family == "gamma_left":
            e = -e
        return np.exp(cv * e - 0.5 * cv**2)
    # log-normal mixture: 85 % narrow, 15 % twice as wide and shifted up (heavier right tail)
    wide = rng.random(n) < 0.15
    z = rng.standard_normal(n)
    log = np.where(wide, 1.8 * cv * z + 0.6 * cv, 0.85 * cv * z - 0.1 * cv)
    return np.exp(log)


def draw(specs, n, site, gain, offset, rng, prefix):
    """`n` normals of one site: rows (subject, age, sex, site, values...)."""
    age = np.clip(18.0 * rng.random(n) ** 1.6, 0.0, 18.0)
    male = rng.random(n) < 0.5
    columns = []
    for spec in specs:
        m = median_curve(spec, age)
        ratio = np.where(male, spec["male"] + spec["late"] * np.clip((age - 11.0) / 5.0, 0.0, 1.0), 1.0)
        true = m * ratio * noise(spec, age, rng)
        columns.append(gain * true + offset * spec["adult"])
    rows = []
    for i in range(n):
        values = "\t".join(f"{c[i]:.5g}" for c in columns)
        rows.append(f"{prefix}{i}\t{age[i]:.4f}\t{'M' if male[i] else 'F'}\t{site}\t{values}")
    return rows


def write_table(path, specs, rows):
    header = "subject\tage\tsex\tsite\t" + "\t".join(s["name"] for s in specs)
    with open(path, "w") as f:
        f.write(header + "\n" + "\n".join(rows) + "\n")


def make_data(work, specs, seed):
    rng = np.random.default_rng(seed)
    train, held = [], []
    for site, (gain, offset) in SITES.items():
        train += draw(specs, 334, site, gain, offset, rng, f"tr{site}")
        held += draw(specs, 1000, site, gain, offset, rng, f"ho{site}")
    paths = {"train": os.path.join(work, "train.tsv"), "held": os.path.join(work, "held.tsv")}
    write_table(paths["train"], specs, train)
    write_table(paths["held"], specs, held)
    site, gain, offset = NEW_SITE
    adapt = draw(specs, max(ADAPT_SIZES), site, gain, offset, rng, f"ad{site}")
    for n in ADAPT_SIZES:
        paths[f"adapt{n}"] = os.path.join(work, f"adapt{n}.tsv")
        write_table(paths[f"adapt{n}"], specs, adapt[:n])
    paths["new_held"] = os.path.join(work, "new_held.tsv")
    write_table(paths["new_held"], specs, draw(specs, 2000, site, gain, offset, rng, f"nh{site}"))
    return paths


def read_table(path):
    """(ages, sexes, sites, {measure: values}) of a measures TSV."""
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()]
    ages = np.array([float(r[1]) for r in rows])
    sexes = np.array([r[2] for r in rows])
    sites = np.array([r[3] for r in rows])
    values = {name: np.array([float(r[4 + j]) for r in rows]) for j, name in enumerate(header[4:])}
    return ages, sexes, sites, values


# ---------------------------------------------------------------- metrics


def baseline_nll(values, train_values):
    """Negative log density of a normal with the training values' mean and SD (PCNtoolkit's
    trivial model of MSLL)."""
    mu, sd = np.mean(train_values), np.std(train_values)
    return 0.5 * np.log(2 * np.pi * sd**2) + (values - mu) ** 2 / (2 * sd**2)


def summarize(ages, centiles, excess_nll):
    """Calibration and MSLL of one tool on one table.

    `centiles` and `excess_nll` map a measure to its per-subject centile (%) and model NLL minus
    baseline NLL."""
    names = list(centiles)
    all_c = np.concatenate([centiles[m] for m in names])
    all_age = np.concatenate([ages for _ in names])
    out = {
        "overall": tail_fractions(all_c),
        "brackets": [tail_fractions(all_c[(all_age >= lo) & (all_age < hi)]) for lo, hi in BRACKETS],
        "msll": float(np.mean(np.concatenate([excess_nll[m] for m in names]))),
    }
    per_measure = {m: tail_fractions(centiles[m]) for m in names}
    worst = max(names, key=lambda m: max(abs(per_measure[m][0] - 2.5), abs(per_measure[m][1] - 2.5)))
    out["worst"] = (worst, *per_measure[worst])
    # Per measure and bracket: the cells outside 1.5-3.5 %.
    misses = []
    for m in names:
        for (lo, hi) in BRACKETS:
            sel = (ages >= lo) & (ages < hi)
            b, a = tail_fractions(centiles[m][sel])
            if not (in_target(b) and in_target(a)):
                misses.append((m, f"{lo:g}-{hi:.0f}", b, a, int(sel.sum())))
    out["cell_misses"] = misses
    out["cells"] = len(names) * len(BRACKETS)
    out["cell_misses_by_chance"] = len(names) * sum(
        chance_miss(int(((ages >= lo) & (ages < hi)).sum())) for lo, hi in BRACKETS
    )
    return out


def chance_miss(n):
    """Probability that a perfectly calibrated model puts a cell of `n` values outside 1.5-3.5 %
    on either side (binomial counts, the two tails taken as independent)."""
    from scipy.stats import binom

    inside = binom.cdf(np.floor(0.035 * n), n, 0.025) - binom.cdf(np.ceil(0.015 * n) - 1, n, 0.025)
    return 1.0 - inside**2


def in_target(percent):
    """Within the 1.5-3.5 % target (a count of exactly 3.5 % is inside, despite rounding)."""
    return 1.5 - 1e-9 <= percent <= 3.5 + 1e-9


def tail_fractions(c):
    return (100.0 * np.mean(c < 2.5), 100.0 * np.mean(c > 97.5))


# ---------------------------------------------------------------- pedinorm


def run(cmd):
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return elapsed, done.stdout


def pedinorm_scores(binary, models, table, out):
    run([binary, "centiles", "score", "--models", models, "--measures", table, "--out", out])
    centiles, nll = {}, {}
    with open(out) as f:
        header = f.readline().rstrip("\n").split("\t")
        col = {name: i for i, name in enumerate(header)}
        for line in f:
            r = line.rstrip("\n").split("\t")
            centiles.setdefault(r[col["measure"]], []).append(float(r[col["centile"]]))
            nll.setdefault(r[col["measure"]], []).append(float(r[col["negative_log_likelihood"]]))
    return {m: np.array(v) for m, v in centiles.items()}, {m: np.array(v) for m, v in nll.items()}


def evaluate_pedinorm(binary, work, paths, train, fit_args):
    results = {}
    fit_s, _ = run(
        [binary, "centiles", "fit", "--measures", paths["train"], "--out", f"{work}/models.json", *fit_args]
    )
    results["fit_seconds"] = fit_s
    for key, models, table in [("held", "models.json", "held"), ("new_before", "models.json", "new_held")]:
        results[key] = score_pedinorm(binary, f"{work}/{models}", paths[table], f"{work}/pn_{key}.tsv", train)
    results["adapt_seconds"] = {}
    for n in ADAPT_SIZES:
        adapted = f"{work}/models_adapt{n}.json"
        results["adapt_seconds"][n], _ = run(
            [binary, "centiles", "adapt", "--models", f"{work}/models.json", "--site", NEW_SITE[0],
             "--measures", paths[f"adapt{n}"], "--out", adapted]
        )
        results[f"new_after{n}"] = score_pedinorm(binary, adapted, paths["new_held"], f"{work}/pn_after{n}.tsv", train)
    return results


def score_pedinorm(binary, models, table, out, train):
    ages, _, _, values = read_table(table)
    centiles, nll = pedinorm_scores(binary, models, table, out)
    excess = {m: nll[m] - baseline_nll(values[m], train[3][m]) for m in centiles}
    return summarize(ages, centiles, excess)


# ---------------------------------------------------------------- PCNtoolkit


def norm_data(ptk, name, table, measures, site_as=None):
    import pandas as pd

    ages, sexes, sites, values = read_table(table)
    frame = pd.DataFrame({"age": ages, "sex": sexes, "site": sites if site_as is None else site_as})
    for m in measures:
        frame[m] = values[m]
    frame["subject"] = [f"{name}{i}" for i in range(len(ages))]
    data = ptk.NormData.from_dataframe(
        name, frame, covariates=["age"], batch_effects=["sex", "site"], response_vars=measures, subject_ids="subject"
    )
    return data, ages, values


def pcntoolkit_summary(model, data, ages, values, train_values):
    """Calibration and MSLL from PCNtoolkit's own Z and log densities."""
    from scipy.stats import norm

    model.compute_zscores(data)
    model.compute_logp(data)
    centiles, excess = {}, {}
    for m in train_values:
        z = data["Z"].sel(response_vars=m).values
        logp = data["logp"].sel(response_vars=m).values  # standardized scale
        sd = np.std(train_values[m])
        y_scaled = (values[m] - np.mean(train_values[m])) / sd
        baseline_logp_scaled = -0.5 * np.log(2 * np.pi) - 0.5 * y_scaled**2
        centiles[m] = 100.0 * norm.cdf(z)
        excess[m] = baseline_logp_scaled - logp
    return summarize(ages, centiles, excess)


class _NoPredictionPass:
    """Leaves out the prediction pass (z, centiles, log densities, predicted means of every
    training value) that `NormativeModel.fit` and `.transfer` end with, so that their wall
    time is the fitting alone; the held-out values are scored afterwards."""

    def __init__(self, ptk):
        self.cls = ptk.NormativeModel

    def __enter__(self):
        self.predict = self.cls.predict
        self.cls.predict = lambda model, data: data

    def __exit__(self, *exc):
        self.cls.predict = self.predict


def evaluate_pcntoolkit(work, paths, train, measures):
    start = time.perf_counter()
    import pcntoolkit as ptk
    from pcntoolkit.util.output import Output

    import_s = time.perf_counter() - start
    Output._show_messages = False
    # The warped, heteroskedastic BLR of PCNtoolkit's documentation (its cluster tutorial),
    # with knots at age quantiles (its option for unevenly sampled covariates: infants here).
    bspline = dict(basis_column=0, degree=3, nknots=PCN_KNOTS, knot_method=PCN_KNOT_METHOD)
    blr = ptk.BLR(
        name="blr",
        n_iter=1000,
        tol=1e-8,
        optimizer="l-bfgs-b",
        l_bfgs_b_epsilon=0.1,
        l_bfgs_b_l=0.1,
        l_bfgs_b_norm="l2",
        warp_name="WarpSinhArcsinh",
        warp_reparam=True,
        fixed_effect=True,
        basis_function_mean=ptk.BsplineBasisFunction(**bspline),
        heteroskedastic=True,
        basis_function_var=ptk.BsplineBasisFunction(**bspline),
        fixed_effect_var=False,
    )
    model = ptk.NormativeModel(
        blr, savemodel=False, evaluate_model=False, saveresults=False, saveplots=False,
        save_dir=f"{work}/pcntoolkit", inscaler="standardize", outscaler="standardize",
    )
    train_values = {m: train[3][m] for m in measures}
    fit_data, _, _ = norm_data(ptk, "train", paths["train"], measures)
    start = time.perf_counter()
    with _NoPredictionPass(ptk):
        model.fit(fit_data)
    results = {"import_seconds": import_s, "fit_seconds": time.perf_counter() - start}
    held, ages, values = norm_data(ptk, "held", paths["held"], measures)
    results["held"] = pcntoolkit_summary(model, held, ages, values, train_values)
    n_new = len(read_table(paths["new_held"])[0])
    before, ages, values = norm_data(ptk, "before", paths["new_held"], measures, site_as=np.array(["A"] * n_new))
    results["new_before"] = pcntoolkit_summary(model, before, ages, values, train_values)
    results["adapt_seconds"] = {}
    for n in ADAPT_SIZES:
        adapt, _, _ = norm_data(ptk, f"adapt{n}", paths[f"adapt{n}"], measures)
        start = time.perf_counter()
        with _NoPredictionPass(ptk):
            transferred = model.transfer(adapt, save_dir=f"{work}/pcntoolkit_transfer{n}")
        results["adapt_seconds"][n] = time.perf_counter() - start
        after, ages, values = norm_data(ptk, f"after{n}", paths["new_held"], measures)
        results[f"new_after{n}"] = pcntoolkit_summary(transferred, after, ages, values, train_values)
    return results


# ---------------------------------------------------------------- report


def report(tool, res):
    def line(label, s):
        b = "  ".join(f"{lo:g}-{hi:.0f}y {x:.2f}/{y:.2f}" for (lo, hi), (x, y) in zip(BRACKETS, s["brackets"]))
        w = s["worst"]
        print(
            f"{tool:10s} {label:18s} below/above {s['overall'][0]:.2f}/{s['overall'][1]:.2f} %  [{b}]  "
            f"MSLL {s['msll']:.3f}  worst {w[0]} {w[1]:.2f}/{w[2]:.2f}  "
            f"cells outside 1.5-3.5: {len(s['cell_misses'])}/{s['cells']} "
            f"(perfect calibration: {s['cell_misses_by_chance']:.0f})"
        )

    print(f"{tool}: fit {res['fit_seconds']:.2f} s" + (
        f" (import {res['import_seconds']:.1f} s not included)" if "import_seconds" in res else ""
    ) + "; adapt " + ", ".join(f"n={n}: {t:.2f} s" for n, t in res["adapt_seconds"].items()))
    line("held A/B/C", res["held"])
    line("D before", res["new_before"])
    for n in ADAPT_SIZES:
        line(f"D after n={n}", res[f"new_after{n}"])


def speed_run(binary, work, seed):
    rng = np.random.default_rng(seed + 1)
    specs = measure_specs(100, rng)
    rows = []
    for site, (gain, offset) in SITES.items():
        rows += draw(specs, 334, site, gain, offset, rng, f"sp{site}")
    table = f"{work}/speed100.tsv"
    write_table(table, specs, rows[:1000])
    seconds, _ = run([binary, "centiles", "fit", "--measures", table, "--out", f"{work}/speed100.json"])
    print(f"speed: pedinorm centiles fit, 100 measures x 1000 subjects: {seconds:.2f} s")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pedinorm", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--skip-pcntoolkit", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--fit-args", default="", help="extra `pedinorm centiles fit` options, e.g. '--scale-knots 4'")
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    specs = measure_specs(20, np.random.default_rng(args.seed))
    paths = make_data(args.work, specs, args.seed)
    train = read_table(paths["train"])
    measures = [s["name"] for s in specs]
    print(f"data: {len(train[0])} training normals, sites {sorted(set(train[2]))}, "
          f"{100 * np.mean(train[0] < 1):.0f} % under 1 y, {100 * np.mean(train[0] < 3):.0f} % under 3 y")

    results = {"pedinorm": evaluate_pedinorm(args.pedinorm, args.work, paths, train, args.fit_args.split())}
    report("pedinorm", results["pedinorm"])
    if not args.skip_pcntoolkit:
        try:
            results["pcntoolkit"] = evaluate_pcntoolkit(args.work, paths, train, measures)
            report("PCNtoolkit", results["pcntoolkit"])
        except Exception as error:  # report why, keep pedinorm's figures
            import traceback

            traceback.print_exc()
            print(f"PCNtoolkit failed: {type(error).__name__}: {error}")
    if not args.skip_speed:
        results["speed_seconds"] = speed_run(args.pedinorm, args.work, args.seed)
    for tool, res in results.items():
        if isinstance(res, dict):
            misses = res["held"]["cell_misses"]
            if misses:
                print(f"{tool}: measure x age-bracket cells of held A/B/C outside 1.5-3.5 %:")
                for m, bracket, b, a, n in misses:
                    print(f"    {m:20s} {bracket:5s} y  {b:.2f}/{a:.2f} % (n={n})")
    with open(f"{args.work}/results.json", "w") as f:
        json.dump(results, f, indent=1, default=float)


if __name__ == "__main__":
    main()
