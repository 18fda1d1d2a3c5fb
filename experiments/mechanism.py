"""The modified flows beside full-batch Adam on a training network (issue 22):
``python -m experiments.mechanism --help``.

For every member (sweep value x seed) of a training configuration, ``bea.mechanism`` runs
full-batch Adam in float64 and the piecewise flows of the zeroth- and first-order
full-batch fields (Remarks 3.4, 3.7; ``--flows order0,order1[,order2]``) from the same
theta(0), and reads along each, every ``--every`` steps: training loss, ||grad E||_{1,eps},
its excess over P sqrt(eps), test accuracy, and the distance to Adam relative to Adam's
displacement. Files (each written atomically)::

    OUT/mechanism.json            the command's settings and its members (written first)
    OUT/MEMBER/flows.json         the member's record (bea.mechanism.FlowRecord), its
                                  equal-loss read-outs and how long each flow stays within
                                  10% of Adam; rewritten after every block
    OUT/MEMBER/state.npz          the state after the last block (deleted when done)
    OUT/summary.json              the read-outs of every member; for a rho or beta sweep the
                                  slopes against rho (beta) for Adam, order1 and order0 with
                                  intervals over seeds, and the verdict; for an h sweep the
                                  slope of max_n ||theta~ - theta|| in h per flow

A second call with the same settings skips the members that are done and continues an
interrupted one from its last block (the numbers are those of an uninterrupted run);
other settings in the same OUT are refused. ``--reanalyse --out OUT`` recomputes
``summary.json`` from the committed ``flows.json`` files alone (the settings come from
``OUT/mechanism.json``; ``--threshold`` and ``--interval`` may change, nothing is
integrated). ``--horizon T`` runs every member T / h steps
(the order measurement: h, h/2, h/4 over one horizon). Models outside
``bea.models.SMOOTH_MODELS`` (ReLU, max-pool) need ``--allow-nonsmooth``. Errors: one line,
exit status 2, nothing written; SIGINT / SIGTERM: one line, exit 130 / 143.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import time

from experiments._cli import (
    Parser,
    check_out_dir,
    check_size,
    fail,
    integer,
    interruptible,
    key_values,
    number,
)

PROG = "experiments.mechanism"
SWEEP_KEYS = ("h", "beta", "rho")
TOL = 0.1  # "within 10% of Adam's displacement"
VERDICTS = ("explains", "does not explain", "cannot tell")
# analysis-only flags: not part of the settings a run directory is checked against
ANALYSIS_FLAGS = ("out", "no_progress", "threshold", "interval", "reanalyse", "no_preflight")
SOLVER_TOL = 0.01
"""A flow whose solver error exceeds this share of its largest distance to Adam is not
resolved: its member is named, and a rho / beta verdict over it reads "cannot tell"."""
PREFLIGHT = "preflight.json"


def build_parser() -> argparse.ArgumentParser:
    from bea.data import DATASET_NAMES
    from bea.mechanism import ERRORS, OPTIMIZERS, TABLEAUS
    from bea.models import MODEL_NAMES

    p = Parser(prog=PROG, description=__doc__.split("\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=MODEL_NAMES, default="cnn_small_smooth")
    p.add_argument("--dataset", choices=DATASET_NAMES, default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--train-size", type=integer, default=None,
                   help="keep the first N training examples")
    p.add_argument("--test-size", type=integer, default=None)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--h", type=number, default=1e-2)
    p.add_argument("--beta", type=number, default=0.9)
    p.add_argument("--rho", type=number, default=0.999)
    p.add_argument("--eps", type=number, default=1e-3)
    p.add_argument("--max-steps", type=integer, default=100, help="Adam steps per member")
    p.add_argument("--horizon", type=number, default=None,
                   help="run every member round(T / h) steps instead of --max-steps")
    p.add_argument("--flow-steps", type=integer, default=None,
                   help="the flows' horizon in steps (default: the whole run)")
    p.add_argument("--every", type=integer, default=10, help="steps per block and read-out")
    p.add_argument("--flows", default="order0,order1",
                   help="comma-separated, of order0, order1, order2")
    p.add_argument("--tableau", choices=list(TABLEAUS), default="dopri5")
    p.add_argument("--substeps", type=integer, default=1)
    p.add_argument("--error", choices=ERRORS, default="embedded",
                   help="solver error: embedded estimates (free) or halving (twin run, 2x)")
    p.add_argument("--allow-nonsmooth", action="store_true",
                   help="integrate on a ReLU / max-pool model (the paper's limitation)")
    p.add_argument("--seed", type=integer, default=0)
    p.add_argument("--seeds", type=integer, default=1)
    p.add_argument("--sweep", type=key_values(SWEEP_KEYS), default=None,
                   help="KEY=V1,V2,... with KEY in h, beta, rho")
    p.add_argument("--threshold", type=number, default=None,
                   help="training loss of the equal-loss read-out (default: the largest "
                        "final loss over every member and trajectory)")
    p.add_argument("--interval", choices=stats_methods(), default="t",
                   help="95%% interval over seeds of the slopes: t (Student-t, K >= 2) or "
                        "bootstrap-t (K >= 6); bea.nn.stats")
    p.add_argument("--reanalyse", action="store_true",
                   help="recompute OUT/summary.json from OUT's flows.json files (the "
                        "settings are OUT/mechanism.json's; nothing is integrated)")
    p.add_argument("--out", required=True)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-preflight", action="store_true",
                   help="skip the pre-flight check (bea.preflight: lambda, h* = kappa / "
                        "lambda and the share of |g_j| below the eps scale, at each h)")
    return p


def stats_methods() -> tuple[str, ...]:
    from bea.nn.stats import METHODS

    return METHODS


def min_seeds(method: str) -> int:
    """The fewest seeds the interval ``method`` is used with (``bea.nn.stats.MIN_SEEDS``)."""
    from bea.nn.stats import MIN_SEEDS

    return MIN_SEEDS[method]


def _settings(args) -> dict:
    """The flags that define the results (all but ``ANALYSIS_FLAGS``)."""
    return {k: v for k, v in vars(args).items() if k not in ANALYSIS_FLAGS}


def plan(args) -> list[dict]:
    """One dict per member: name, TrainConfig, FlowSpec; ValueError (one line) for bad
    input, before anything is built or written."""
    from bea import mechanism as F
    from bea.nn.train import MAX_MEMBERS, TrainConfig, members

    names = tuple(f.strip() for f in args.flows.split(",") if f.strip())
    configs = 1 if args.sweep is None else len(args.sweep[1])
    check_size(f"members (--seeds {args.seeds} x {configs} sweep value(s))",
               args.seeds * configs, MAX_MEMBERS)
    method = getattr(args, "interval", "t")
    if (args.sweep is not None and args.sweep[0] in ("beta", "rho")
            and args.seeds < min_seeds(method)):
        raise ValueError(f"--seeds {args.seeds} is too few for the {method} interval over "
                         f"seeds of a {args.sweep[0]} sweep (at least {min_seeds(method)})")
    if args.horizon is not None and not (args.horizon > 0 and math.isfinite(args.horizon)):
        raise ValueError(f"--horizon must be > 0, got {args.horizon}")
    base = TrainConfig(model=args.model, dataset=args.dataset, data_dir=args.data_dir,
                       train_size=args.train_size, test_size=args.test_size,
                       optimizer=args.optimizer, h=args.h, beta=args.beta, rho=args.rho,
                       eps=args.eps, max_steps=args.max_steps, seed=args.seed,
                       seeds=args.seeds, dtype="float64", sweep=args.sweep)
    out = []
    for m in members(base):
        steps = args.max_steps
        if args.horizon is not None:
            steps = max(1, round(args.horizon / m["h"]))
        cfg = dataclasses.replace(base, h=m["h"], beta=m["beta"], rho=m["rho"], eps=m["eps"],
                                  seed=m["seed"], seeds=1, sweep=None, max_steps=steps)
        spec = F.FlowSpec(flows=names, flow_steps=args.flow_steps, every=args.every,
                          tableau=args.tableau, substeps=args.substeps, error=args.error,
                          allow_nonsmooth=args.allow_nonsmooth)
        F.check(cfg, spec)
        out.append({"name": m["name"] or "run", "cfg": cfg, "spec": spec,
                    "x": None if args.sweep is None else m[args.sweep[0]], "seed": m["seed"]})
    return out


@interruptible(PROG, "; every file is whole, and the same command continues from the last "
                     "block")
def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    import bea

    bea.enable_x64()  # before any array exists
    from bea import io
    from bea.data import DataError
    from bea.mechanism import FlowError
    from bea.nn.train import load_data

    if args.reanalyse:
        extra = sorted(parser.given - set(ANALYSIS_FLAGS))
        if extra:  # the settings are the run directory's: another flag would be ignored
            fail(PROG, f"--reanalyse takes its settings from --out's mechanism.json: "
                       f"--{extra[0].replace('_', '-')} would be ignored (give only --out, "
                       "--threshold, --interval)")
        return reanalyse(args)
    try:
        members = plan(args)
        load_data(members[0]["cfg"])  # a bad data flag is refused before anything is written
        check_out_dir(args.out)
        head = os.path.join(args.out, "mechanism.json")
        want = io.jsonable({"settings": _settings(args),
                            "members": [m["name"] for m in members]})
        if os.path.exists(head):
            have = io.read_json(head)
            if have != want:
                diff = [k for k in want["settings"]
                        if have.get("settings", {}).get(k) != want["settings"][k]]
                raise ValueError(f"--out {args.out} holds another mechanism run"
                                 + (f" (--{diff[0].replace('_', '-')} "
                                    f"{have.get('settings', {}).get(diff[0])!r} there)"
                                    if diff else ""))
    except (ValueError, FlowError, DataError) as e:
        fail(PROG, str(e))
    io.write_json(head, want)
    pre = None if args.no_preflight else preflight(members, args.out)
    for line in preflight_lines(pre):
        print(line, flush=True)
    records = {}
    for m in members:
        records[m["name"]] = _member(m, args)
    summary = summarize(members, records, args.threshold, args.interval, pre)
    io.write_json(os.path.join(args.out, "summary.json"), summary)
    for line in summary_lines(summary, preflight=False):  # printed before the run
        print(line)
    return summary


def load_run(out: str, method: str = "t") -> tuple[list[dict], dict]:
    """The members (``plan``) and finished FlowRecords of the mechanism run directory
    ``out``, from its ``mechanism.json`` and ``flows.json`` files alone; ValueError (one
    line) for a directory without ``mechanism.json`` or with an unfinished member."""
    from bea import io
    from bea import mechanism as F

    head = os.path.join(out, "mechanism.json")
    if not os.path.isfile(head):
        raise ValueError(f"--reanalyse: {head} not found (not a mechanism run directory)")
    try:
        have = io.read_json(head)
        settings = dict(have["settings"])
        if settings.get("sweep") is not None:
            key, values = settings["sweep"]
            settings["sweep"] = (key, tuple(values))
        members = plan(argparse.Namespace(**settings, interval=method))
        listed = have["members"]
    except (KeyError, TypeError, AttributeError, F.FlowError) as e:  # a damaged file
        raise ValueError(f"--reanalyse: {head} is not a mechanism run's settings "
                         f"({type(e).__name__}: {e})") from None
    if [m["name"] for m in members] != listed:
        raise ValueError(f"--reanalyse: {head} lists other members than its settings give")
    records = {}
    for m in members:
        path = os.path.join(out, *m["name"].split("/"), "flows.json")
        if not os.path.isfile(path):
            raise ValueError(f"--reanalyse: member {m['name']} has no flows.json "
                             "(run the command to finish it)")
        try:
            rec = F.FlowRecord.from_json(io.read_json(path)["record"])
        except (KeyError, TypeError, AttributeError, ValueError) as e:  # a damaged file
            raise ValueError(f"--reanalyse: {path} is not a member's record "
                             f"({type(e).__name__}: {e})") from None
        if not rec.done:
            raise ValueError(f"--reanalyse: member {m['name']} stopped at step "
                             f"{rec.steps[-1]} (run the command to finish it)")
        records[m["name"]] = rec
    return members, records


def reanalyse(args) -> dict:
    """``--reanalyse``: the summary of OUT recomputed from its ``flows.json`` files
    (``load_run``) with today's read-outs and ``--interval``; nothing is integrated.
    Refused in one line, nothing written: no ``mechanism.json``, a member without a
    finished ``flows.json``."""
    from bea import io

    try:
        members, records = load_run(args.out, args.interval)
        path = os.path.join(args.out, PREFLIGHT)
        pre = io.read_json(path)["h"] if os.path.isfile(path) else None
        summary = summarize(members, records, args.threshold, args.interval, pre)
    except ValueError as e:
        fail(PROG, str(e))
    io.write_json(os.path.join(args.out, "summary.json"), summary)
    for line in summary_lines(summary):
        print(line)
    return summary


def _member(m: dict, args):
    """Run (or skip, or continue) one member; returns its FlowRecord."""
    from bea import io
    from bea import mechanism as F

    d = os.path.join(args.out, *m["name"].split("/"))
    path, state_path = os.path.join(d, "flows.json"), os.path.join(d, "state.npz")
    resume = None
    if os.path.exists(path):
        rec = F.FlowRecord.from_json(io.read_json(path)["record"])
        if rec.done:
            return rec
        engine = F.build(m["cfg"], m["spec"])
        if os.path.exists(state_path):
            with open(state_path, "rb") as f:
                state = F.state_from_bytes(engine, f.read())
            if int(state["n"]) == rec.steps[-1]:
                resume = (state, rec)
    else:
        engine = F.build(m["cfg"], m["spec"])
    t0 = time.monotonic()

    def save(state, rec):
        io.write_atomic(state_path, F.state_to_bytes(state))
        io.write_json(path, member_json(rec, m))
        if not args.no_progress:
            print(f"{PROG}: {m['name']}: step {rec.steps[-1]}/{m['cfg'].max_steps} "
                  f"({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)

    rec = F.run(engine, resume=resume, on_block=save)
    io.write_json(path, member_json(rec, m))
    if os.path.exists(state_path):
        os.unlink(state_path)
    return rec


def preflight(members: list[dict], out: str) -> list[dict]:
    """``bea.preflight`` of the run at each of its h (the first member there, over the
    flows' horizon): the stiffness lambda of the zeroth-order field along the discrete
    run, h* = kappa / lambda below which the modified equation's expansion holds
    (docs/small_eps.md), h lambda, and the share of |g_j| below the eps scale. Read from
    ``OUT/preflight.json`` when a first call wrote it; nothing is solved."""
    import bea
    from bea import io
    from bea import mechanism as F
    from bea.nn.train import load_data, problem

    path = os.path.join(out, PREFLIGHT)
    if os.path.isfile(path):
        return io.read_json(path)["h"]
    rows, seen = [], set()
    for m in members:
        cfg = m["cfg"]
        if cfg.h in seen:
            continue
        seen.add(cfg.h)
        steps = F.horizon(cfg, m["spec"])
        data = load_data(cfg)
        prob = problem(cfg, cfg.seed, data)
        hyper = {"rho": cfg.rho, "eps": cfg.eps}
        if cfg.optimizer == "adam":
            hyper["beta"] = cfg.beta
        try:
            pf = bea.preflight(prob.loss, prob.theta0, prob.data, name=cfg.model,
                               optimizer=cfg.optimizer, h=(cfg.h,), T=cfg.h * steps,
                               fields=("order0",), force=True, **hyper)
        except ValueError as e:  # a diagnosis, never a reason not to run the flows
            print(f"{PROG}: pre-flight at h = {cfg.h:g} skipped: {e}", file=sys.stderr)
            continue
        rows.append({"h": cfg.h, "member": m["name"], "steps": steps,
                     "stiffness": pf.stiffness, "kappa": pf.kappa, "h_star": pf.h_star,
                     "h_lambda": pf.h_lambda[0], "threshold": pf.threshold,
                     "small_share": pf.small_share, "seconds": pf.check_seconds})
    io.write_json(path, {"h": rows})
    return rows


def preflight_lines(rows: list[dict] | None) -> list[str]:
    """One line per h: lambda, h*, h lambda against kappa, the share below the eps scale."""
    lines = []
    for r in rows or ():
        inside = r["h_lambda"] <= r["kappa"]
        share = ("" if r["small_share"] is None else
                 f"; {100 * r['small_share']:.1f}% of |g_j| below {r['threshold']:.2g}")
        lines.append(
            f"pre-flight at h = {r['h']:g} ({r['seconds']:.1f} s): lambda = "
            f"{r['stiffness']:.3g}, h* = {r['kappa']:g} / lambda = {r['h_star']:.3g}, "
            f"h lambda = {r['h_lambda']:.3g}{share}: "
            + ("inside the modified equation's regime" if inside else
               "OUTSIDE the modified equation's regime (h > h*: order 2 in h is not "
               "expected; docs/small_eps.md)"))
    return lines


def solver_warnings(members: list[dict], records: dict) -> list[dict]:
    """The (member, flow) pairs whose solver error exceeds ``SOLVER_TOL`` of the flow's
    largest distance to Adam: there the distance measures the solver, not the flow."""
    out = []
    for m in members:
        rec = records[m["name"]]
        for f, err in rec.solver_error.items():
            d = rec.max_distance[f]
            if not err <= SOLVER_TOL * d:
                out.append({"member": m["name"], "flow": f, "solver_error": err,
                            "max_distance": d, "ratio": err / d if d else math.inf})
    return out


def member_json(rec, m: dict) -> dict:
    """A member's flows.json: its record and how long each flow stays within TOL."""
    from bea import mechanism as F

    within = {f: F.steps_within(rec, f, TOL) for f in rec.spec["flows"]}
    return {"member": m["name"], "record": rec.to_json(), "within_10pct": within}


def summarize(members: list[dict], records: dict, threshold: float | None,
              method: str = "t", pre: list[dict] | None = None) -> dict:
    """The read-outs at equal loss of every member, and per sweep kind the slopes and the
    verdict (rho / beta) or the order in h (h); the pre-flight rows ``pre``
    (:func:`preflight`) and the solver warnings (:func:`solver_warnings`)."""
    from bea import fit_slope
    from bea import mechanism as F

    if threshold is None:  # the largest final loss: every trajectory reaches it
        threshold = max(c["train_loss"][-1] for r in records.values()
                        for c in r.curves.values()) * (1 + 1e-12)
    out = {"threshold": threshold, "members": {}, "preflight": pre,
           "solver_warnings": solver_warnings(members, records)}
    for m in members:
        rec = records[m["name"]]
        ro = F.readouts(rec, threshold)
        out["members"][m["name"]] = {
            "x": m["x"], "seed": m["seed"], "h": m["cfg"].h,
            "readout": {t: None if r is None else r["interp"]["perturbed_one_norm"]
                        for t, r in ro.items()},
            "readout_step": {t: None if r is None else r["step_interp"] for t, r in ro.items()},
            "max_distance": rec.max_distance, "solver_error": rec.solver_error,
            "within_10pct": {f: F.steps_within(rec, f, TOL) for f in rec.spec["flows"]},
            "seconds": rec.seconds}
    key = None if not members or members[0]["x"] is None else _sweep_key(members)
    if key == "h":
        hs = sorted({m["cfg"].h for m in members}, reverse=True)
        seeds = sorted({m["seed"] for m in members})
        order = {}
        for f in members[0]["spec"].flows:
            per_seed = []
            for s in seeds:
                err = [next(records[m["name"]].max_distance[f] for m in members
                            if m["cfg"].h == h and m["seed"] == s) for h in hs]
                per_seed.append({"seed": s, "h": hs, "max_distance": err,
                                 "slope": fit_slope(hs, err)})
            order[f] = per_seed
        out["order"] = order
    elif key in ("rho", "beta"):
        out["trend"] = trend(members, out["members"], key, method)
        bad = sorted({w["member"] for w in out["solver_warnings"]})
        if bad:
            out["trend"]["verdict_unchecked"] = out["trend"]["verdict"]
            out["trend"]["verdict"] = "cannot tell"
            out["trend"]["why"] = (f"the solver error exceeds {SOLVER_TOL:.0%} of a flow's "
                                   f"distance to Adam in {len(bad)} member(s), e.g. {bad[0]}: "
                                   "raise --substeps")
    out["key"] = key
    return out


def _sweep_key(members):
    for k in SWEEP_KEYS:
        if len({getattr(m["cfg"], k) for m in members}) > 1:
            return k
    return None


def interval(values, method: str = "t"):
    """The 95% interval over seeds of a mean, the one place the interval method is called:
    ``bea.nn.stats.mean_interval`` (``"t"``, the Student-t interval, by default; its
    coverage at K = 2, 3, 8, 16 is simulated in tests/test_nn_stats.py)."""
    from bea.nn import stats

    return stats.mean_interval(values, method)


def trend(members: list[dict], rows: dict, key: str, method: str = "t") -> dict:
    """Per-seed slopes of the equal-loss read-out against ``key`` for Adam, order1 and
    order0, their intervals over seeds, the paired differences flow - Adam, and the verdict:
    **explains** (order1 - Adam's interval holds 0 and order0 - Adam's does not),
    **does not explain** (order1 - Adam's excludes 0), else **cannot tell**."""
    import numpy as np

    from bea.nn import stats

    xs = sorted({m["x"] for m in members})
    seeds = sorted({m["seed"] for m in members})
    trajs = [t for t in ("adam", "order1", "order0")
             if all(t in rows[m["name"]]["readout"] for m in members)]
    y = {t: np.full((len(xs), len(seeds)), np.nan) for t in trajs}
    for m in members:
        for t in trajs:
            v = rows[m["name"]]["readout"][t]
            y[t][xs.index(m["x"]), seeds.index(m["seed"])] = np.nan if v is None else v
    missing = [t for t in trajs if not np.all(np.isfinite(y[t]))]
    out = {"x": xs, "seeds": seeds, "readouts": {t: y[t].tolist() for t in trajs}}
    if missing or "adam" not in trajs or "order1" not in trajs:
        out["verdict"] = "cannot tell"
        out["why"] = (f"the read-out is missing for {', '.join(missing)} (the threshold was "
                      "not reached)" if missing else "needs adam and order1")
        return out
    slopes = {t: stats.per_seed_slopes(np.array(xs), y[t]) for t in trajs}
    out["per_seed_slopes"] = {t: s.tolist() for t, s in slopes.items()}
    out["interval"] = method
    out["slopes"] = {t: interval(s, method)._asdict() for t, s in slopes.items()}
    diffs = {t: interval(slopes[t] - slopes["adam"], method) for t in trajs if t != "adam"}
    out["differences"] = {t: d._asdict() for t, d in diffs.items()}
    # two-sided p-values of "the mean is 0" that go with the intervals (for Holm across
    # figures: bea.nn.stats.holm)
    out["p_values"] = {t: stats.p_value(s, method) for t, s in slopes.items()}
    out["p_values"].update({f"{t} - adam": stats.p_value(slopes[t] - slopes["adam"], method)
                            for t in diffs})

    def holds0(iv):
        return iv.lo <= 0 <= iv.hi

    if not holds0(diffs["order1"]):
        v = "does not explain"
    elif "order0" in diffs and not holds0(diffs["order0"]):
        v = "explains"
    else:
        v = "cannot tell"
    out["verdict"] = v
    out["K"] = len(seeds)
    return out


def summary_lines(summary: dict, preflight: bool = True) -> list[str]:
    lines = preflight_lines(summary.get("preflight")) if preflight else []
    lines.append(f"equal-loss threshold {summary['threshold']:.6g}")
    for name, r in summary["members"].items():
        w = ", ".join(f"{f} within 10% to step {v['steps']} (Adam loss {v['adam_loss']:.4g})"
                      for f, v in r["within_10pct"].items())
        md = ", ".join(f"{f} {v:.3g}" for f, v in r["max_distance"].items())
        lines.append(f"{name}: max ||theta~ - theta|| {md}; {w}")
    for w in summary.get("solver_warnings", ()):
        lines.append(f"warning: {w['member']}: {w['flow']}'s solver error {w['solver_error']:.2g}"
                     f" is {w['ratio']:.1%} of its largest distance to Adam "
                     f"({w['max_distance']:.3g}): not resolved; raise --substeps")
    for f, per in summary.get("order", {}).items():
        lines.append(f"order in h of {f}: slopes " + ", ".join(f"{p['slope']:.2f}"
                                                             for p in per))
    t = summary.get("trend")
    if t is not None:
        if "slopes" in t:
            for k, iv in t["slopes"].items():
                lines.append(f"slope of ||grad E||_1,eps against {summary['key']} ({k}): "
                             f"{iv['estimate']:.4g} [{iv['lo']:.4g}, {iv['hi']:.4g}]")
            for k, iv in t["differences"].items():
                lines.append(f"{k} - adam: {iv['estimate']:.4g} [{iv['lo']:.4g}, "
                             f"{iv['hi']:.4g}], p = {t['p_values'][k + ' - adam']:.2g}")
        say = {"cannot tell": "cannot tell whether the first-order term explains Adam's trend"
               }.get(t["verdict"], f"the first-order term {t['verdict']} Adam's trend")
        lines.append(f"verdict (K={len(t['seeds'])}, {summary['key']}, "
                     f"{t.get('interval', 't')} interval): {say}"
                     + (f" ({t['why']})" if "why" in t else ""))
    return lines


HEADLINE_COLUMNS = ("adam", "order1", "order0", "order1 - adam", "order0 - adam")
"""The cells of a headline row (``headline_row``): the three slopes and the two paired
differences, each ``estimate [lo, hi]``."""


def _cell(iv: dict) -> str:
    return f"{iv['estimate']:.3g} [{iv['lo']:.3g}, {iv['hi']:.3g}]"


def headline_row(summary: dict) -> dict:
    """The headline of a rho / beta sweep's summary as table cells: K, the interval
    method, the slope of ||grad E||_{1,eps} at equal loss against the swept value for
    adam, order1 and order0, the differences flow - adam, the verdict (docs/training.md's
    table; tests/test_experiments_mechanism.py recomputes it from the committed files)."""
    t = summary["trend"]
    cells = {k: _cell(t["slopes"][k]) for k in ("adam", "order1", "order0")}
    cells.update({f"{k} - adam": _cell(t["differences"][k]) for k in ("order1", "order0")})
    return {"K": t["K"], "interval": t["interval"], "key": summary["key"],
            "threshold": f"{summary['threshold']:.4g}", **cells, "verdict": t["verdict"]}


if __name__ == "__main__":
    main()
