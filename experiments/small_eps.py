"""python -m experiments.small_eps: where the modified equation holds as eps -> 0, measured
(docs/small_eps.md; the paper's Section 7, second limitation).

Where a gradient component sits below sqrt(eps), Adam's step in it is about h g / sqrt(eps):
gradient descent with step h / sqrt(eps). The zeroth-order field is then stiff, with
lambda ~ lambda_max(H) / sqrt(eps) (``bea.preflight``'s stiffness), and the first-order
field can show order 2 only once h lambda is small. For each model and each eps this
command measures

    h* = the h at which the first-order field's local slope reaches 1.8

on a halving ladder of h built around the pre-flight's lambda (``bea.sweep(...,
solver="fixed", fields=["order0", "order1"], force=True)``): the local slope between
neighbouring h is placed at their geometric mean, and h* is where, coming from the finest
h, the slope first falls below 1.8 (interpolated in log h). Where every slope is below 1.8,
h* is below the finest pair (a bound, ``h* < h``); where every slope is at least 1.8, h*
is above the coarsest (``h* > h``). Then h* lambda against eps: a constant kappa = h*
lambda where the stiffness sets h* (``bea._preflight.KAPPA`` is fitted here, on the
bilinear model and the MLP; the user-style model is held out).

Models: the bilinear model (Section 5) at beta = 0.5, rho = 0.7 (a short memory, so that
N (1 - rho) does not set h*) with T = 4 (its gradient falls below sqrt(eps) near t = 2.5);
the digits MLP (``bea.problems.mlp``, full batch) and a user-style model: a 97-parameter
tanh network as a nested dict (10 -> 8 -> 1) on 256 random examples. Each (model, eps)
is written to OUT/MODEL_eps1e-N.json as soon as it is measured (atomically); a rerun with
the same settings reads it back instead of measuring it again. OUT/small_eps.json holds
every record, the fitted kappa and the held-out check; OUT/small_eps.png the figure.

    python -m experiments.small_eps --out results/small_eps    # ~25 min on a busy 2-core box
    python -m experiments.small_eps --small --out DIR           # the test's size, seconds
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any, NamedTuple

from experiments._cli import (
    Parser,
    check_out_dir,
    enable_compile_cache,
    fail,
    integer,
    interruptible,
    numbers,
    save_png,
)

PROG = "python -m experiments.small_eps"
TARGET = 1.8  # the local slope at which order 2 counts as shown
EPS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8)
FIT = ("bilinear", "mlp")  # the models kappa is fitted on; "user" is held out
FACTOR = 3.0  # the rule h* = kappa / lambda is checked to within this factor
SUMMARY = ("small_eps.json", "small_eps.png")


class Model(NamedTuple):
    """One model of the measurement: horizon ``T``, Adam's ``beta``, ``rho``; the ladder
    has ``points`` h values, the coarsest at h lambda = ``z_top`` (at most ``h_max``),
    halving, each with N = T/h at most ``n_cap`` (finer ones are dropped: h* is then a
    bound)."""

    name: str
    T: float
    beta: float
    rho: float
    points: int
    z_top: float
    h_max: float
    n_cap: int
    why: str


MODELS = {
    "bilinear": Model("bilinear", 4.0, 0.5, 0.7, 6, 2.0, 0.05, 400_000,
                      "Section 5's model; T = 4 so that the gradient falls below sqrt(eps)"),
    "mlp": Model("mlp", 0.2, 0.5, 0.7, 5, 2.0, 0.0125, 6_000,
                 "bea.problems.mlp (digits, 1210 parameters), full batch"),
    "user": Model("user", 0.4, 0.5, 0.7, 5, 2.0, 0.025, 16_000,
                  "a 97-parameter tanh network as a nested dict, 256 random examples"),
}
# --small (the test): the held-out user-style model at one eps, short horizon
SMALL_MODELS = {"user": Model("user", 0.1, 0.5, 0.7, 5, 1.0, 0.025, 2_500, "the test's size")}
SMALL_EPS = (1e-6,)


# --- the user-style model: what a user writes, a nested dict of parameters -----------------

def user_model(seed: int = 0, num_examples: int = 256, d: int = 10,
               hidden: int = 8) -> tuple[dict, dict]:
    """(params, data) of a tanh network 10 -> 8 -> 1 (97 parameters, nested dict) on
    ``num_examples`` seeded Gaussian inputs with a smooth target: what a user brings."""
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, d))
    y = np.tanh(x @ rng.normal(size=d) / math.sqrt(d)) + 0.1 * rng.normal(size=num_examples)
    params = {"hidden": {"w": jnp.asarray(rng.normal(size=(d, hidden)) / math.sqrt(d)),
                         "b": jnp.zeros(hidden)},
              "out": {"w": jnp.asarray(rng.normal(size=(hidden, 1)) / math.sqrt(hidden)),
                      "b": jnp.zeros(1)}}
    return params, {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def user_loss(params, batch):
    """Mean squared error of the user-style network."""
    import jax.numpy as jnp

    a = jnp.tanh(batch["x"] @ params["hidden"]["w"] + params["hidden"]["b"])
    pred = (a @ params["out"]["w"] + params["out"]["b"])[:, 0]
    return 0.5 * jnp.mean((pred - batch["y"]) ** 2)


def problem(name: str) -> tuple[Any, Any, Any]:
    """(loss, params0, data) of model ``name``, as a user passes them to ``bea.sweep``."""
    from bea.problems import make_problem

    if name == "user":
        params, data = user_model()
        return user_loss, params, data
    p = make_problem(name)
    return p.loss, p.theta0, p.data


# --- h* from a ladder ----------------------------------------------------------------------

def h_star(h, slopes, valid=None) -> tuple[float, str]:
    """(h*, kind) from the local slopes between neighbouring ``h`` (coarsest first; slope i
    placed at sqrt(h_i h_{i+1})): coming from the finest, the first slope below
    :data:`TARGET`, h* interpolated in log h between it and the finer one (kind '=');
    every slope below it: h* < the finest midpoint ('<'); none below: h* > the coarsest
    midpoint ('>'). ``valid`` (per slope) leaves out slopes next to a point at the solver's
    floor."""
    import numpy as np

    h, s = np.asarray(h, float), np.asarray(slopes, float)
    mid = np.sqrt(h[:-1] * h[1:])
    keep = np.isfinite(s) if valid is None else (np.asarray(valid, bool) & np.isfinite(s))
    mid, s = mid[keep], s[keep]
    if len(s) == 0:
        return math.nan, "?"
    if s[-1] < TARGET:
        return float(mid[-1]), "<"
    for i in range(len(s) - 2, -1, -1):
        if s[i] < TARGET:  # s[i] < TARGET <= s[i + 1]: interpolate in log h
            w = (TARGET - s[i + 1]) / (s[i] - s[i + 1])
            lo, hi = np.log(mid[i + 1]), np.log(mid[i])
            return float(np.exp(lo + w * (hi - lo))), "="
    return float(mid[0]), ">"


def ladder(m: Model, lam: float) -> list[float]:
    """Halving h = T/N, the coarsest at h lambda = ``m.z_top`` (at most ``m.h_max``, N >=
    8), N <= ``m.n_cap``; where fewer than three fit, the three finest affordable (N =
    n_cap/4, n_cap/2, n_cap), which can only bound h*."""
    top = min(m.h_max, m.z_top / lam if lam > 0 else m.h_max, m.T / 8)
    N0 = math.ceil(m.T / top)
    Ns = [N0 * 2**k for k in range(m.points) if N0 * 2**k <= m.n_cap]
    if len(Ns) < 3:
        Ns = [m.n_cap // 4, m.n_cap // 2, m.n_cap // 4 * 4]
    return [m.T / N for N in Ns]


def measure(m: Model, eps: float, log) -> dict:
    """One (model, eps): the probe's lambda, the ladder, the sweep and h*."""
    import numpy as np

    import bea

    loss, params, data = problem(m.name)
    hyper = dict(beta=m.beta, rho=m.rho, eps=eps, T=m.T)
    t0 = time.perf_counter()
    probe_h = m.T / 64
    probe = bea.preflight(loss, params, data, h=[probe_h], solver="fixed", **hyper)
    hs = ladder(m, probe.stiffness)
    log(f"  {m.name} eps={eps:g}: probe lambda = {probe.stiffness:.3g} (h = {probe_h:g}); "
        f"ladder {', '.join(f'{h:.3g}' for h in hs)} (N up to {round(m.T / hs[-1])})")
    r = bea.sweep(loss, params, data, h=hs, solver="fixed", fields=["order0", "order1"],
                  force=True, name=m.name, **hyper)
    pf = r.preflight
    lam = float(pf["stiffness"])
    f = r.fields["order1"]
    bad = f.floor | ~np.isfinite(f.errors)
    valid = ~(bad[:-1] | bad[1:])
    hstar, kind = h_star(r.h, f.local_slopes, valid)
    rec = dict(
        model=m.name, eps=eps, T=m.T, beta=m.beta, rho=m.rho,
        probe_h=probe_h, probe_lambda=probe.stiffness,
        lam=lam, small_share=pf["small_share"], min_grad=pf["min_grad"],
        h=list(r.h), N=list(r.N), h_lambda=[h * lam for h in r.h],
        errors={k: list(v.errors) for k, v in r.fields.items()},
        local_slopes={k: list(v.local_slopes) for k, v in r.fields.items()},
        floor={k: list(v.floor) for k, v in r.fields.items()},
        tableau={k: list(v.tableau) for k, v in r.fields.items()},
        diverged_at={str(k): v for k, v in r.diverged_at.items()},
        h_star=hstar, kind=kind, h_star_lambda=hstar * lam,
        seconds=round(time.perf_counter() - t0, 1))
    return rec


def settings_of(m: Model, eps: float) -> dict:
    """What a stored record must match to be reused."""
    return dict(model=m._asdict(), eps=eps, target=TARGET)


def record_path(out: str, m: Model, eps: float) -> str:
    """``OUT/{model}_eps{eps}.json``: eps as ``1e-03`` where that is exact (the committed
    files), else its repr (1.5e-3 and 2e-3 must not share a file)."""
    tag = f"{eps:.0e}" if float(f"{eps:.0e}") == eps else repr(eps)
    return os.path.join(out, f"{m.name}_eps{tag}.json")


def kappa_in_use() -> float:
    """The kappa that ``bea.preflight`` prints h* = kappa / lambda with (``bea.KAPPA``)."""
    import bea

    return bea.KAPPA


# --- the rule ------------------------------------------------------------------------------

def fit_kappa(records: list[dict], models=FIT) -> dict:
    """kappa = the geometric mean of h* lambda over the measured (not bounded) h* of
    ``models``, with its spread (the largest factor between a point and the fit)."""
    import numpy as np

    z = [r["h_star_lambda"] for r in records if r["model"] in models and r["kind"] == "="]
    if not z:
        return dict(kappa=math.nan, points=0, spread=math.nan)
    k = float(np.exp(np.mean(np.log(z))))
    spread = float(np.max(np.abs(np.log(np.asarray(z) / k))))
    return dict(kappa=k, points=len(z), spread=float(np.exp(spread)))


def check_rule(records: list[dict], kappa: float, models=("user",)) -> list[dict]:
    """Per record of ``models``: the rule's h* = kappa / lambda beside the measured h*.
    ``ratio`` = measured / predicted (for a bound, the bound's); ``within``: the ratio lies
    in [1/FACTOR, FACTOR] (None where a bound leaves it open); ``sufficient``: h* >= kappa
    / lambda, i.e. order 2 shows at the rule's h (None where a bound leaves it open)."""
    out = []
    for r in records:
        if r["model"] not in models:
            continue
        pred = kappa / r["lam"]
        x = math.nan if r["h_star"] is None else r["h_star"] / pred
        kind = r["kind"]
        if kind == "=":
            within, sufficient = 1 / FACTOR <= x <= FACTOR, x >= 1
        elif kind == ">":  # h* above x * pred
            within, sufficient = (False if x > FACTOR else None), (True if x >= 1 else None)
        elif kind == "<":  # h* below x * pred
            within, sufficient = (False if x < 1 / FACTOR else None), (False if x < 1 else None)
        else:
            within = sufficient = None
        out.append(dict(model=r["model"], eps=r["eps"], lam=r["lam"], predicted=pred,
                        measured=r["h_star"], kind=kind, ratio=x, within=within,
                        sufficient=sufficient))
    return out


# --- output --------------------------------------------------------------------------------

def table(records: list[dict]) -> str:
    lines = [f"{'model':<9} {'eps':>6} {'lambda':>9} {'below':>6} {'h*':>10} "
             f"{'h* lambda':>10}  local slopes of order1 (h lambda)"]
    for r in records:
        r = r | {k: math.nan for k in ("h_star", "h_star_lambda") if r[k] is None}  # JSON null
        share = "-" if r["small_share"] is None else f"{100 * r['small_share']:.0f}%"
        hs = f"{r['kind'] if r['kind'] != '=' else ' '}{r['h_star']:.3g}"
        sl = ", ".join(f"{s:.2f}" for s in r["local_slopes"]["order1"])
        zs = f"{r['h_lambda'][0]:.3g}..{r['h_lambda'][-1]:.3g}"
        lines.append(f"{r['model']:<9} {r['eps']:>6.0e} {r['lam']:>9.3g} {share:>6} {hs:>10} "
                     f"{r['h_star_lambda']:>10.3g}  {sl} ({zs})")
    lines.append(f"h*: where order1's local slope reaches {TARGET} ('<': below the finest "
                 "pair, '>': above the coarsest); lambda: the pre-flight's stiffness at the "
                 "finest h; below: gradient components under 3 sqrt(eps)")
    return "\n".join(lines)


def plot(records: list[dict], kappa: float, path: str, dpi: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np


    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    marks = {"bilinear": "o", "mlp": "s", "user": "^"}
    for name in dict.fromkeys(r["model"] for r in records):
        rs = [r for r in records if r["model"] == name]
        eps, hs, lam = (np.asarray([np.nan if r[k] is None else r[k] for r in rs])
                        for k in ("eps", "h_star", "lam"))
        kinds = [r["kind"] for r in rs]
        meas = np.asarray([k == "=" for k in kinds])
        shown = np.isfinite(hs)
        eps, hs, lam, meas = eps[shown], hs[shown], lam[shown], meas[shown]
        kinds = [k for k, s in zip(kinds, shown, strict=True) if s]
        for ax, x, y in ((axes[0], eps, hs), (axes[1], eps, hs * lam), (axes[2], 1 / lam, hs)):
            line, = ax.loglog(x, y, "-", lw=0.8, alpha=0.6)
            c = line.get_color()
            ax.loglog(x[meas], y[meas], marks.get(name, "o"), color=c,
                      label=f"{name}" + (" (held out)" if name not in FIT else ""))
            for xi, yi, k in zip(x[~meas], y[~meas], np.asarray(kinds)[~meas], strict=True):
                ax.loglog([xi], [yi], marks.get(name, "o"), mfc="none", color=c)
                ax.annotate("", (xi, yi * (0.55 if k == "<" else 1.8)), (xi, yi),
                            arrowprops=dict(arrowstyle="->", color=c, lw=0.8))
    axes[0].set(xlabel="eps", ylabel="h*", title="h* (slope of order1 reaches 1.8)")
    axes[1].set(xlabel="eps", ylabel="h* lambda", title="h* lambda (constant: collapse)")
    axes[1].axhline(kappa, color="k", lw=0.7, ls="--", label=f"kappa = {kappa:.2g}")
    lo = min(1 / r["lam"] for r in records)
    hi = max(1 / r["lam"] for r in records)
    xs = np.geomspace(lo, hi, 10)
    axes[2].loglog(xs, kappa * xs, "k--", lw=0.7, label="h* = kappa / lambda")
    axes[2].set(xlabel="1 / lambda (pre-flight)", ylabel="h*", title="h* against 1/lambda")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    fig.suptitle("Where the first-order modified equation holds as eps -> 0 (open: a bound)",
                 fontsize=9)
    fig.tight_layout()
    save_png(fig, path, dpi)


def build_parser() -> Parser:
    p = Parser(prog=PROG, description=__doc__.split("\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="results/small_eps", help="output directory")
    p.add_argument("--models", nargs="+", default=None, choices=list(MODELS),
                   help="models to measure (default all; with --small the user-style one)")
    p.add_argument("--eps", type=numbers, default=None,
                   help="comma-separated eps (default 1e-1,...,1e-8; --small 1e-6)")
    p.add_argument("--small", action="store_true", help="the test's size: seconds")
    p.add_argument("--dpi", type=integer, default=90, help="PNG resolution")
    p.add_argument("--no-compile-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache")
    return p


@interruptible(PROG, "; every (model, eps) measured so far is written whole, and a rerun "
                     "resumes from it")
def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    models = SMALL_MODELS if args.small else MODELS
    names = args.models or list(models)
    if args.small and any(n not in models for n in names):
        fail(PROG, f"--small measures {', '.join(models)} only, got --models {' '.join(names)}")
    eps_list = tuple(args.eps) if args.eps else (SMALL_EPS if args.small else EPS)
    for flag, given in (("--eps", eps_list), ("--models", names)):
        repeated = sorted({v for v in given if list(given).count(v) > 1}, key=str)
        if repeated:
            fail(PROG, f"{flag} {repeated[0]!r} is given twice")
    for e in eps_list:
        if not (math.isfinite(e) and 0 < e < 1):
            fail(PROG, f"--eps {e!r} must lie in (0, 1)")
    if not 20 <= args.dpi <= 300:
        fail(PROG, f"--dpi must be an integer in [20, 300], got {args.dpi}")
    try:
        check_out_dir(args.out)
    except ValueError as e:
        fail(PROG, str(e))

    import bea

    bea.enable_x64()
    if not args.no_compile_cache:
        enable_compile_cache()
    from bea.io import jsonable, read_json, write_json

    KAPPA = kappa_in_use()

    def log(s: str) -> None:
        print(s, flush=True)

    t0 = time.perf_counter()
    records = []
    for name in names:
        m = models[name]
        for eps in eps_list:
            path = record_path(args.out, m, eps)
            want = jsonable(settings_of(m, eps))
            if os.path.exists(path):
                old = read_json(path)
                if old.get("settings") == want:
                    records.append(old["record"])
                    log(f"  {name} eps={eps:g}: read back from {path}")
                    continue
            rec = measure(m, eps, log)
            write_json(path, jsonable(dict(settings=want, record=rec)))
            records.append(jsonable(rec))
            log(f"  {name} eps={eps:g}: h* {rec['kind']} {rec['h_star']:.3g}, h* lambda = "
                f"{rec['h_star_lambda']:.3g} ({rec['seconds']} s)")
    fit = fit_kappa(records)
    kappa = fit["kappa"] if math.isfinite(fit["kappa"]) else KAPPA
    held = check_rule(records, KAPPA)
    doc = dict(
        what=f"h*: the h at which the first-order field's local slope reaches {TARGET}, "
             "against eps and the pre-flight's stiffness lambda (docs/small_eps.md)",
        models={n: models[n]._asdict() for n in names}, eps=list(eps_list), small=args.small,
        fit=fit | dict(models=list(FIT)), kappa_in_use=KAPPA, factor=FACTOR,
        held_out=held, records=records, seconds=round(time.perf_counter() - t0, 1))
    write_json(os.path.join(args.out, SUMMARY[0]), jsonable(doc))
    plot(records, kappa, os.path.join(args.out, SUMMARY[1]), args.dpi)
    print(table(records))
    print(f"kappa fitted on {', '.join(FIT)}: {fit['kappa']:.3g} over {fit['points']} points "
          f"(spread x{fit['spread']:.2g}); in use: {KAPPA:g}")
    for c in held:
        print(f"held out {c['model']} eps={c['eps']:g}: h* {c['kind']} {c['measured']:.3g}, "
              f"rule kappa/lambda = {c['predicted']:.3g} (x{c['ratio']:.2g}; within "
              f"{FACTOR:g}x: {c['within']}; sufficient: {c['sufficient']})")
    print(f"{doc['seconds']} s; wrote {args.out}/{SUMMARY[0]} and {SUMMARY[1]}")
    return doc


if __name__ == "__main__":
    main()
