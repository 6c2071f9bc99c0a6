"""Scaling fits over a sweep's trials: loss against compute, and loss against size and data.

    vst sweep --report-only --out runs/sweep     # refit and redraw from results.csv

`analyse(rows)` takes the rows of a sweep's results.csv (one per training run: family,
depth, budget, train_flops, bpb, non_embedding_params, positions_seen, seed, role) and,
per family, fits

* L(C) = E + A * C^-alpha on the compute frontier (the best trial at each budget) or on
  every trial (`points="all"`), with bootstrap intervals from resampled trials;
* L(N, D) = E + A * N^-a + B * D^-b (Chinchilla's form; N non-embedding parameters, D
  positions seen) only where the grid has at least 3 sizes and 3 budgets;
* the same L(C) without the largest budget, and its prediction for the held-out trials
  next to what they measured and to the seed noise (trials that differ only by seed);

and where the VST's fitted curve crosses each text family's. The fits run in log space
from several starting points, with E bounded below the smallest loss, so that they
converge on the handful of points a CPU sweep produces. With fewer than 3 distinct
budgets there is nothing to pin E, so it is fixed at 0 (a pure power law) and the fit
says so in `form`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np

from data.errors import BadInput

VST_FAMILY = "vst"
CONTROL_FAMILY = "reader-control"  # the VST's reader trained alone on null tokens
Z_NOISE = 2.0  # a held-out trial is "within seed noise" if |measured - fit| <= 2 sigma_seed


# -- L(C) ---------------------------------------------------------------------------------
def power_law(C: np.ndarray | float, E: float, A: float, alpha: float) -> np.ndarray:
    return E + A * np.power(np.asarray(C, dtype=float), -alpha)


def fit_compute(C: Sequence[float], L: Sequence[float]) -> Optional[dict[str, Any]]:
    """Fit L = E + A * C^-alpha; None when fewer than 2 distinct compute values.

    Parameterised as L = E + exp(a - alpha * x) with x = ln(C / C0) and C0 the geometric
    mean of C, so a and alpha are not entangled by the 1e12-scale of C; residuals are
    taken in log L (relative error, as in Hoffmann et al.'s Huber-in-log fits).
    """
    C, L = np.asarray(C, float), np.asarray(L, float)
    ok = np.isfinite(C) & np.isfinite(L) & (C > 0) & (L > 0)
    C, L = C[ok], L[ok]
    distinct = len(np.unique(np.round(np.log(C), 6)))
    if distinct < 2:
        return None
    c0 = float(np.exp(np.log(C).mean()))
    x = np.log(C / c0)
    if distinct < 3:  # E cannot be told from A and alpha: pure power law, closed form
        slope, a = np.polyfit(x, np.log(L), 1)
        alpha = max(-slope, 0.0)
        return _compute_fit(0.0, a, alpha, c0, C, L, "power law, E fixed at 0 (< 3 budgets)")
    from scipy.optimize import curve_fit

    def model(xv, E, a, alpha):
        return np.log(E + np.exp(a - alpha * xv))

    lmin = float(L.min())
    best = None
    for frac in (0.0, 0.3, 0.6, 0.8, 0.95):
        E0 = frac * lmin
        slope, a0 = np.polyfit(x, np.log(np.maximum(L - E0, 1e-9)), 1)
        p0 = (E0, a0, float(np.clip(-slope, 1e-3, 4.0)))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p, _ = curve_fit(model, x, np.log(L), p0=p0, maxfev=20000,
                                 bounds=([0.0, -50.0, 0.0], [0.999 * lmin, 50.0, 5.0]))
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((model(x, *p) - np.log(L)) ** 2))
        if best is None or sse < best[0]:
            best = (sse, p)
    if best is None:
        return None
    E, a, alpha = (float(v) for v in best[1])
    return _compute_fit(E, a, alpha, c0, C, L, "E + A * C^-alpha")


def _compute_fit(E, a, alpha, c0, C, L, form) -> dict[str, Any]:
    # A = exp(a) * C0^alpha, kept in log10 too: it is astronomically large for alpha ~ 0.3
    log10_A = (a + alpha * math.log(c0)) / math.log(10)
    fit = {"E": E, "alpha": alpha, "log10_A": log10_A, "A": 10.0 ** log10_A
           if log10_A < 300 else math.inf, "form": form, "points": len(C),
           "C_range": [float(C.min()), float(C.max())], "_a": a, "_c0": c0}
    fit["rmse"] = float(np.sqrt(np.mean((predict_compute(fit, C) - L) ** 2)))
    return fit


def predict_compute(fit: dict[str, Any], C: np.ndarray | float) -> np.ndarray:
    x = np.log(np.asarray(C, float) / fit["_c0"])
    return fit["E"] + np.exp(fit["_a"] - fit["alpha"] * x)


# -- L(N, D) ------------------------------------------------------------------------------
def fit_size_data(N: Sequence[float], D: Sequence[float], L: Sequence[float]
                  ) -> Optional[dict[str, Any]]:
    """Chinchilla's L = E + A * N^-a + B * D^-b, in log space; None if it does not converge."""
    from scipy.optimize import curve_fit

    N, D, L = (np.asarray(v, float) for v in (N, D, L))
    n0, d0 = float(np.exp(np.log(N).mean())), float(np.exp(np.log(D).mean()))
    xn, xd = np.log(N / n0), np.log(D / d0)

    def model(X, E, la, a, lb, b):
        return np.log(E + np.exp(la - a * X[0]) + np.exp(lb - b * X[1]))

    lmin, best = float(L.min()), None
    for frac in (0.0, 0.5, 0.8):
        for ab in (0.1, 0.3, 0.6):
            p0 = (frac * lmin, math.log(lmin / 3), ab, math.log(lmin / 3), ab)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    p, _ = curve_fit(model, (xn, xd), np.log(L), p0=p0, maxfev=20000,
                                     bounds=([0, -50, 0, -50, 0], [0.999 * lmin, 50, 3, 50, 3]))
            except (RuntimeError, ValueError):
                continue
            sse = float(np.sum((model((xn, xd), *p) - np.log(L)) ** 2))
            if best is None or sse < best[0]:
                best = (sse, p)
    if best is None:
        return None
    E, la, a, lb, b = (float(v) for v in best[1])
    return {"E": E, "a": a, "b": b, "log10_A": (la + a * math.log(n0)) / math.log(10),
            "log10_B": (lb + b * math.log(d0)) / math.log(10), "points": len(L),
            "rmse": math.sqrt(best[0] / len(L)), "_p": [E, la, a, lb, b], "_n0": n0, "_d0": d0,
            "form": "E + A * N^-a + B * D^-b (N: non-embedding params, D: positions seen)"}


def predict_size_data(fit: dict[str, Any], N, D) -> np.ndarray:
    E, la, a, lb, b = fit["_p"]
    xn, xd = np.log(np.asarray(N, float) / fit["_n0"]), np.log(np.asarray(D, float) / fit["_d0"])
    return E + np.exp(la - a * xn) + np.exp(lb - b * xd)


# -- trials -------------------------------------------------------------------------------
def grid_rows(rows: list[dict]) -> list[dict]:
    """The grid's trials (extra seeds of the noise configuration excluded), each with a bpb."""
    return [r for r in rows if r.get("role", "grid") == "grid" and _num(r.get("bpb"))]


def frontier(rows: list[dict]) -> list[dict]:
    """The best trial (lowest bpb) at each budget: the compute-optimal frontier."""
    best: dict[float, dict] = {}
    for r in rows:
        b = float(r["budget"])
        if b not in best or float(r["bpb"]) < float(best[b]["bpb"]):
            best[b] = r
    return [best[b] for b in sorted(best)]


def best_lr(rows: list[dict]) -> list[dict]:
    """With a learning-rate sweep, the best trial of each (family, depth, budget); a
    scaling law is about well-tuned runs, not the average over learning rates."""
    best: dict[tuple, dict] = {}
    for r in rows:
        key = (r["family"], int(r["depth"]), float(r["budget"]), int(r.get("seed") or 0))
        if key not in best or float(r["bpb"]) < float(best[key]["bpb"]):
            best[key] = r
    return list(best.values())


def _fit_rows(rows: list[dict], points: str) -> Optional[dict[str, Any]]:
    use = frontier(rows) if points == "frontier" else rows
    return fit_compute([float(r["train_flops"]) for r in use], [float(r["bpb"]) for r in use])


def bootstrap(rows: list[dict], fit: Callable[[list[dict]], Optional[dict]], n: int,
              seed: int = 0) -> list[dict]:
    """Refit on `n` resamples of the trials (with replacement); failed refits are dropped."""
    rng = np.random.default_rng(seed)
    fits = []
    for _ in range(n):
        sample = [rows[i] for i in rng.integers(0, len(rows), len(rows))]
        f = fit(sample)
        if f is not None:
            fits.append(f)
    return fits


def intervals(fits: list[dict], C_grid: np.ndarray, level: float = 0.95) -> dict[str, Any]:
    """Percentile intervals of E, alpha, log10 A and of the curve over C_grid."""
    if not fits:
        return {}
    lo, hi = 50 * (1 - level), 50 * (1 + level)
    out: dict[str, Any] = {"resamples": len(fits), "level": level}
    for key in ("E", "alpha", "log10_A"):
        vals = np.array([f[key] for f in fits])
        out[key] = [float(np.percentile(vals, lo)), float(np.percentile(vals, hi))]
    curves = np.array([predict_compute(f, C_grid) for f in fits])
    out["band_C"] = C_grid.tolist()
    out["band_lo"] = np.percentile(curves, lo, axis=0).tolist()
    out["band_hi"] = np.percentile(curves, hi, axis=0).tolist()
    return out


def seed_noise(rows: list[dict]) -> Optional[float]:
    """Pooled standard deviation of bpb over trials that differ only by seed (ddof 1)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if _num(r.get("bpb")):
            key = (r["family"], int(r["depth"]), float(r["budget"]), float(r.get("lr") or 0))
            groups.setdefault(key, []).append(float(r["bpb"]))
    var = [(np.var(v, ddof=1), len(v) - 1) for v in groups.values() if len(v) > 1]
    if not var:
        return None
    return float(math.sqrt(sum(s * d for s, d in var) / sum(d for _, d in var)))


def crossover(fa: dict, fb: dict, lo: float, hi: float) -> Optional[dict[str, float]]:
    """The first compute in [lo, hi] where the two fitted curves cross, or None."""
    from scipy.optimize import brentq

    grid = np.geomspace(lo, hi, 400)
    diff = predict_compute(fa, grid) - predict_compute(fb, grid)
    for i in np.nonzero(np.sign(diff[:-1]) * np.sign(diff[1:]) < 0)[0]:
        x = brentq(lambda lc: float(predict_compute(fa, math.exp(lc)) - predict_compute(
            fb, math.exp(lc))), math.log(grid[i]), math.log(grid[i + 1]))
        c = math.exp(x)
        return {"C": c, "bpb": float(predict_compute(fa, c))}
    return None


def analyse(rows: list[dict], *, points: str = "frontier", n_boot: int = 200,
            holdout: bool = True, seed: int = 0) -> dict[str, Any]:
    """Every fit and comparison the report shows (see the module docstring)."""
    if points not in ("frontier", "all"):
        raise BadInput("points must be frontier or all")
    grid = grid_rows(rows)
    families = sorted({r["family"] for r in grid}, key=lambda f: (f != VST_FAMILY, f))
    noise = {f: seed_noise([r for r in rows if r["family"] == f]) for f in families}
    pooled = seed_noise([r for r in rows])
    out: dict[str, Any] = {"points": points, "families": {}, "crossovers": []}
    for fam in families:
        fr = best_lr([r for r in grid if r["family"] == fam])
        res: dict[str, Any] = {"trials": len(fr)}
        budgets = sorted({float(r["budget"]) for r in fr})
        res["optimal_depth"] = [{"budget": float(r["budget"]), "depth": int(r["depth"]),
                                 "bpb": float(r["bpb"]), "train_flops": float(r["train_flops"])}
                                for r in frontier(fr)]
        res["fit"] = _fit_rows(fr, points)
        if res["fit"] is not None:
            cg = np.geomspace(*res["fit"]["C_range"], 60)
            boots = bootstrap(fr, lambda s: _fit_rows(s, points), n_boot, seed)
            res["bootstrap"] = intervals(boots, cg)
        res["seed_noise"] = noise[fam] if noise[fam] is not None else pooled
        res["seed_noise_from"] = fam if noise[fam] is not None else (
            "all families pooled" if pooled is not None else None)
        if holdout and len(budgets) >= 3:
            res["holdout"] = _holdout(fr, budgets[-1], points, res["seed_noise"])
        sizes = sorted({int(r["depth"]) for r in fr})
        if len(sizes) >= 3 and len(budgets) >= 3 and len(fr) >= 6:
            res["size_data_fit"] = fit_size_data(
                [float(r["non_embedding_params"]) for r in fr],
                [float(r["positions_seen"]) for r in fr], [float(r["bpb"]) for r in fr])
        else:
            res["size_data_fit"] = None
            res["size_data_note"] = (f"not fitted: needs >= 3 sizes and >= 3 budgets "
                                     f"(have {len(sizes)} and {len(budgets)})")
        out["families"][fam] = res
    vst = out["families"].get(VST_FAMILY, {}).get("fit")
    for fam in families:
        other = out["families"][fam].get("fit")
        if fam == VST_FAMILY or vst is None or other is None:
            continue
        lo = min(vst["C_range"][0], other["C_range"][0])
        hi = max(vst["C_range"][1], other["C_range"][1])
        x = crossover(vst, other, lo, hi)
        out["crossovers"].append({"a": VST_FAMILY, "b": fam, "range": [lo, hi], "cross": x,
                                  "statement": crossover_statement(VST_FAMILY, fam, vst, other,
                                                                   lo, hi, x)})
    return out


def _holdout(rows: list[dict], top: float, points: str, noise: Optional[float]) -> dict:
    """Fit without the largest budget; predict its trials; compare with seed noise."""
    fit = _fit_rows([r for r in rows if float(r["budget"]) < top], points)
    held = [r for r in rows if float(r["budget"]) == top]
    if points == "frontier":
        held = frontier(held)  # the frontier fit predicts the best size at that budget
    preds = []
    for r in held:
        p = float(predict_compute(fit, float(r["train_flops"]))) if fit else None
        err = None if p is None else float(r["bpb"]) - p
        preds.append({"trial": r.get("name", ""), "depth": int(r["depth"]),
                      "train_flops": float(r["train_flops"]), "measured": float(r["bpb"]),
                      "predicted": p, "error": err,
                      "within_noise": None if (err is None or noise is None)
                      else bool(abs(err) <= Z_NOISE * noise)})
    return {"budget": top, "fit": fit, "predictions": preds}


def crossover_statement(a: str, b: str, fa: dict, fb: dict, lo: float, hi: float,
                        x: Optional[dict]) -> str:
    if x is not None:
        below = a if float(predict_compute(fa, lo)) < float(predict_compute(fb, lo)) else b
        above = b if below == a else a
        return (f"The fitted curves of {a} and {b} cross at {x['C']:.3g} training FLOPs "
                f"({x['bpb']:.3f} bits per byte): below it {below} reaches the lower bpb, "
                f"above it {above}.")
    better = a if float(predict_compute(fa, hi)) < float(predict_compute(fb, hi)) else b
    return (f"The fitted curves of {a} and {b} do not cross within the fitted range "
            f"({lo:.3g} to {hi:.3g} training FLOPs): {better} is lower throughout.")


def _num(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
