"""Typed results of convergence sweeps, and the files written from them.

A :class:`SweepResult` is what :func:`bea.sweep` returns (one optimizer, one ladder of h):
``fields`` maps each field to its :class:`FieldResult` (the error max_n ||theta~(nh) -
theta^(n)||_2 at every h, the fitted and local slopes, the flags of points left out of the
fit and how each solve was measured), ``schedule`` is the typed :class:`Schedule` of
batches, ``config`` the sweep's configuration. ``save(directory)`` writes
``convergence.json`` (strict JSON: NaN as null; ``"version": 2``) and ``convergence.csv``,
and a PNG where asked; :meth:`SweepResult.load` reads the JSON back, version 1 (the files
written before the version field) included. A :class:`GridResult` holds one SweepResult per
hyperparameter combination of :func:`bea.grid`; :meth:`GridResult.load` reads a saved grid.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from jaxtyping import Bool, Float, Int

from bea._measure import MIN_STEPS, Point, fit_slope, local_slopes, too_few_steps
from bea.io import read_json, write_atomic, write_json

__all__ = ["SweepResult", "GridResult", "FieldResult", "Schedule", "VERSION"]

VERSION = 2
"""The version of the result files written: 1 (no ``version`` key) held the schedule in
``config``; 2 holds it under ``schedule``."""

_SCHEDULE_KEYS = ("histories", "left_out", "distinct_batches")  # in version 1's config
_PER_FIELD = ("errors", "solver_error", "floor", "outside", "few_steps", "slopes",
              "local_slopes", "solver", "tableau", "estimate", "ode_diverged_at", "failure")


def _floats(x) -> np.ndarray:
    """A float array of ``x``, None (JSON's NaN) read as NaN."""
    return np.asarray([np.nan if v is None else v for v in x], float)


@dataclasses.dataclass(frozen=True, eq=False)
class FieldResult:
    """One field's measurement over the ladder of h (docs/math.md, section 6), arrays and
    tuples over h, coarsest first.

    ``errors``: err(h) = max_n ||theta~(nh) - theta^(n)||_2 (NaN where the discrete run
    diverged); ``solver_error``: the measured error of the solve; the flags of points left
    out of the fit: ``floor`` (within 10x of the solver error or the round-off floor, or
    exactly 0), ``outside`` (as large as the distance the modified flow travels: the
    expansion explains nothing there), ``few_steps`` (N below
    :data:`bea._measure.MIN_STEPS`); ``slope``: the least-squares slope of log err on log h
    over the points carrying none of the flags (NaN with fewer than two); ``local_slopes``:
    between neighbouring h (one fewer than h); per h the ``solver`` ('fixed', 'adaptive' or
    'implicit'), its ``tableau``, how its error was measured (``estimate``: 'embedded',
    'halving' or 'refined'), ``ode_diverged_at`` (the first non-finite row of the
    modified path, None if finite) and ``failure`` (None, or why an adaptive or implicit
    solve stopped: a dict with 'cause' ('max_steps' or 'nonfinite'), 'interval' and the
    one-line 'message'; None in files written before it was recorded)."""

    errors: Float[np.ndarray, " H"]
    solver_error: Float[np.ndarray, " H"]
    floor: Bool[np.ndarray, " H"]
    outside: Bool[np.ndarray, " H"]
    few_steps: Bool[np.ndarray, " H"]
    slope: float
    local_slopes: Float[np.ndarray, " H-1"]
    solver: tuple[str | None, ...]
    tableau: tuple[str | None, ...]
    estimate: tuple[str | None, ...]
    ode_diverged_at: tuple[int | None, ...]
    failure: tuple[dict | None, ...] = ()

    def __post_init__(self):
        if len(self.failure) != len(self.errors):  # files written before it was recorded
            object.__setattr__(self, "failure", (None,) * len(self.errors))

    @classmethod
    def from_points(cls, h: Float[np.ndarray, " H"], N: Int[np.ndarray, " H"],
                    points: Sequence[Point]) -> FieldResult:
        """The field's result from its measured points, one per h: the flags, and the
        slope fitted over the points none of them marks (docs/math.md, section 6)."""
        errors = np.asarray([p.error for p in points], float)
        floor = np.asarray([p.floor for p in points], bool)
        outside = np.asarray([p.outside for p in points], bool)
        few = np.asarray([too_few_steps(n) for n in N], bool)
        return cls(errors=errors,
                   solver_error=np.asarray([p.solver_error for p in points], float),
                   floor=floor, outside=outside, few_steps=few,
                   slope=fit_slope(h, errors, use=~(floor | outside | few)),
                   local_slopes=np.asarray(local_slopes(h, errors)),
                   solver=tuple(p.solver for p in points),
                   tableau=tuple(p.tableau for p in points),
                   estimate=tuple(p.estimate for p in points),
                   ode_diverged_at=tuple(p.ode_diverged_at for p in points),
                   failure=tuple(p.failure for p in points))

    def mark(self, i: int) -> str:
        """The table's mark of point ``i``: '*' at the floor, '!' outside the expansion,
        '<' too few steps, ' ' fitted (the first that applies)."""
        return ("*" if self.floor[i] else "!" if self.outside[i] else
                "<" if self.few_steps[i] else " ")


@dataclasses.dataclass(frozen=True)
class Schedule:
    """The batches a sweep stepped through: ``batching`` ('iid': a fresh random batch per
    step; 'epoch': a fixed partition, reshuffled each epoch) of ``batch_size`` examples
    (None: full batch, every step uses all the data); with the epoch schedule the number of
    ``distinct_batches`` and the examples ``left_out`` (whole batches only); and per field
    how its history was walked (``histories``: 'full batch', 'direct' or 'grouped',
    docs/math.md, section 7)."""

    batching: str
    batch_size: int | None
    histories: dict[str, str]
    distinct_batches: int | None = None
    left_out: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Schedule:
        return cls(batching=d["batching"], batch_size=d["batch_size"],
                   histories=dict(d["histories"]), distinct_batches=d["distinct_batches"],
                   left_out=d["left_out"])


@dataclasses.dataclass(frozen=True, eq=False)
class SweepResult:
    """The measured errors and orders of one sweep (docs/math.md, section 6).

    ``fields`` maps each field ('order1', ...) to its :class:`FieldResult`;
    ``h`` and ``N`` are the ladder (coarsest first); ``schedule`` the batches
    (:class:`Schedule`); ``config`` the configuration (:meth:`bea.SweepConfig.to_dict`
    with the hyperparameters of the combination, and for an optimizer factory what it
    tells of itself). ``diverged_at`` maps an h whose discrete run produced NaN/inf to the
    step where it did. ``platform`` and ``placement`` say where the sweep ran and why
    (bea._placement). Read-only views per quantity, keyed by field (``errors``,
    ``solver_error``, ``floor``, ``outside``, ``few_steps``, ``slopes``, ``local_slopes``,
    ``solver``, ``tableau``, ``estimate``, ``ode_diverged_at``, ``failure``), are derived
    from ``fields``: ``result.errors["order1"] is result.fields["order1"].errors``."""

    config: dict[str, Any]
    problem: str
    h: Float[np.ndarray, " H"]
    N: Int[np.ndarray, " H"]
    fields: dict[str, FieldResult]
    schedule: Schedule
    diverged_at: dict[float, int]
    seconds: float
    devices: int
    platform: str
    placement: str = ""
    preflight: dict[str, Any] | None = None  # bea._preflight.Preflight.to_dict(); older: None

    def _per_field(self, attr: str) -> dict[str, Any]:
        return {k: getattr(f, attr) for k, f in self.fields.items()}

    @property
    def errors(self) -> dict[str, np.ndarray]:
        return self._per_field("errors")

    @property
    def solver_error(self) -> dict[str, np.ndarray]:
        return self._per_field("solver_error")

    @property
    def floor(self) -> dict[str, np.ndarray]:
        return self._per_field("floor")

    @property
    def outside(self) -> dict[str, np.ndarray]:
        return self._per_field("outside")

    @property
    def few_steps(self) -> dict[str, np.ndarray]:
        return self._per_field("few_steps")

    @property
    def slopes(self) -> dict[str, float]:
        return self._per_field("slope")

    @property
    def local_slopes(self) -> dict[str, np.ndarray]:
        return self._per_field("local_slopes")

    @property
    def solver(self) -> dict[str, tuple]:
        return self._per_field("solver")

    @property
    def tableau(self) -> dict[str, tuple]:
        return self._per_field("tableau")

    @property
    def estimate(self) -> dict[str, tuple]:
        return self._per_field("estimate")

    @property
    def ode_diverged_at(self) -> dict[str, tuple]:
        return self._per_field("ode_diverged_at")

    @property
    def failure(self) -> dict[str, tuple]:
        return self._per_field("failure")

    def replace_field(self, kind: str, **changes: Any) -> SweepResult:
        """A copy with ``changes`` made to field ``kind``'s :class:`FieldResult`."""
        fields = dict(self.fields)
        fields[kind] = dataclasses.replace(fields[kind], **changes)
        return dataclasses.replace(self, fields=fields)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``convergence.json`` (version :data:`VERSION`): per
        quantity a mapping field -> values (the keys of version 1, which hand-written
        readers use), the schedule under ``schedule``."""
        d: dict[str, Any] = {"version": VERSION, "config": self.config,
                             "problem": self.problem, "h": self.h, "N": self.N,
                             "schedule": self.schedule.to_dict()}
        for key in _PER_FIELD:
            d[key] = self._per_field("slope" if key == "slopes" else key)
        if not any(any(f.failure) for f in self.fields.values()):
            del d["failure"]  # written only where a solve failed (absent: none did)
        d["diverged_at"] = {repr(float(h)): int(n) for h, n in self.diverged_at.items()}
        d.update(seconds=self.seconds, devices=self.devices, platform=self.platform,
                 placement=self.placement)
        if self.preflight is not None:
            d["preflight"] = self.preflight
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepResult:
        """The result of a ``convergence.json`` document, version 1 or 2; ValueError naming
        the version if it is newer than this bea reads."""
        version = d.get("version", 1)
        if version not in (1, VERSION):
            raise ValueError(f"result file version {version!r} is not one this bea reads "
                             f"(1 to {VERSION}); a newer bea wrote it")
        config = dict(d["config"])
        h = _floats(d["h"])
        H = len(h)
        if version == 1:  # the schedule sat in the config; older files lack some keys
            facts = {k: config.pop(k, None) for k in _SCHEDULE_KEYS}
            mini = config.get("batch_size") is not None
            schedule = Schedule(
                batching=config.get("batching", "iid"), batch_size=config.get("batch_size"),
                histories=facts["histories"] or {
                    k: "direct" if mini else "full batch" for k in d["errors"]},
                distinct_batches=facts["distinct_batches"], left_out=facts["left_out"])
        else:
            schedule = Schedule.from_dict(d["schedule"])

        def flags(key, kind):  # 'outside' and 'few_steps' are absent from older files
            return np.asarray(d.get(key, {}).get(kind, [False] * H), bool)

        fields = {k: FieldResult(
            errors=_floats(d["errors"][k]), solver_error=_floats(d["solver_error"][k]),
            floor=np.asarray(d["floor"][k], bool), outside=flags("outside", k),
            few_steps=flags("few_steps", k),
            slope=np.nan if d["slopes"][k] is None else float(d["slopes"][k]),
            local_slopes=_floats(d["local_slopes"][k]), solver=tuple(d["solver"][k]),
            tableau=tuple(d["tableau"][k]), estimate=tuple(d["estimate"][k]),
            ode_diverged_at=tuple(d["ode_diverged_at"][k]),
            failure=tuple(d.get("failure", {}).get(k) or ())) for k in d["errors"]}
        return cls(config=config, problem=d["problem"], h=h, N=np.asarray(d["N"], int),
                   fields=fields, schedule=schedule,
                   diverged_at={float(h): int(n) for h, n in d["diverged_at"].items()},
                   seconds=float(d["seconds"]), devices=int(d["devices"]),
                   platform=d["platform"], placement=d.get("placement", ""),
                   preflight=d.get("preflight"))

    @classmethod
    def load(cls, path: str | os.PathLike) -> SweepResult:
        """Read ``convergence.json`` (a file, or the directory holding it), version 1 or 2.
        ValueError naming the path if there is none, or it is not a sweep result."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "convergence.json")
        d = _read(path, "errors")
        try:
            return cls.from_dict(d)
        except (KeyError, TypeError, AttributeError) as e:
            what = repr(e.args[0]) if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            raise ValueError(f"{path!r} is not a complete sweep result ({what} missing or "
                             "malformed)") from None

    def csv(self) -> str:
        """One row per h: h, N, then per field its error, floor flag and solver error, then
        per field its outside and few-steps flags."""
        buf = io.StringIO()
        w = csv.writer(buf)
        fields = self.fields
        w.writerow(["h", "N"] + [f"error_{k}" for k in fields] + [f"floor_{k}" for k in fields]
                   + [f"solver_error_{k}" for k in fields] + [f"outside_{k}" for k in fields]
                   + [f"few_steps_{k}" for k in fields])
        for i, h in enumerate(self.h):
            w.writerow([repr(float(h)), int(self.N[i])]
                       + [repr(float(self.errors[k][i])) for k in fields]
                       + [bool(self.floor[k][i]) for k in fields]
                       + [repr(float(self.solver_error[k][i])) for k in fields]
                       + [bool(self.outside[k][i]) for k in fields]
                       + [bool(self.few_steps[k][i]) for k in fields])
        return buf.getvalue()

    def mark(self, field: str, i: int) -> str:
        """The table's mark of point ``i`` of ``field`` (:meth:`FieldResult.mark`)."""
        return self.fields[field].mark(i)

    def table(self) -> str:
        """The printed table: errors per h and field with their marks (:meth:`mark`), local
        slopes beside them, the fitted slopes, a legend line for each mark that appears, and
        a line per diverged run."""
        fields = self.fields
        shown = set()
        head = f"{'h':>10} {'N':>7} " + " ".join(f"{k:>12}" for k in fields)
        lines = [head + " | local slope " + " ".join(f"{k:>11}" for k in fields)]
        for i, h in enumerate(self.h):
            errs = []
            for k in fields:
                e = self.errors[k][i]
                mark = self.mark(k, i) if np.isfinite(e) else " "
                shown.add(mark)
                why = self.fields[k].failure[i]
                nan = ("diverged" if h in self.diverged_at else
                       "max steps" if why and why["cause"] == "max_steps" else "field NaN")
                errs.append(f"{e:11.3e}{mark}" if np.isfinite(e) else f"{nan:>12}")
            loc = []
            for k in fields:
                s = self.local_slopes[k][i - 1] if i > 0 else np.nan
                loc.append(f"{s:11.3f}" if np.isfinite(s) else f"{'':>11}")
            lines.append(f"{h:>10.4g} {int(self.N[i]):>7d} " + " ".join(errs) + " | "
                         + " " * 11 + " ".join(loc))
        lines.append("fitted slope " + "  ".join(
            f"{k}: {self.slopes[k]:.3f}" if np.isfinite(self.slopes[k]) else
            f"{k}: - (fewer than two usable points)" for k in fields))
        if "*" in shown:
            lines.append("* at the solver/round-off floor: left out of the fit")
        if "!" in shown:
            lines.append("! as large as the motion it describes (the run left the range of "
                         "the expansion): left out of the fit")
        if "<" in shown:
            lines.append(f"< fewer than {MIN_STEPS} steps, too few to show the order: left "
                         "out of the fit")
        for h, step in self.diverged_at.items():
            lines.append(f"h={h:g}: the discrete run diverged (NaN/inf) at step {step}")
        for k in fields:
            f = self.fields[k]
            for i, (h, step) in enumerate(zip(self.h, f.ode_diverged_at, strict=True)):
                if h in self.diverged_at:
                    continue
                if step is None:  # the solve finished: a failure is its error reference's
                    if f.failure[i] is not None:
                        lines.append(f"h={h:g}: the {k} field's solve finished but its error "
                                     "reference (at 100x tighter tolerance) did not, so its "
                                     f"solver error is unknown: {f.failure[i]['message']}")
                    continue
                if f.failure[i] is not None:
                    lines.append(f.failure[i]["message"])
                elif f.solver[i] == "fixed":
                    lines.append(f"h={h:g}: the {k} field's fixed-step solve is NaN/inf from "
                                 f"step {step - 1} on (an explicit step beyond its stability "
                                 "limit, or a field not defined there): try solver 'auto'")
                else:  # a file written before failures were recorded
                    lines.append(f"h={h:g}: the {k} field's solve is NaN/inf from step "
                                 f"{step - 1} on (the discrete run is finite; this file does "
                                 "not record whether the solver ran out of steps)")
        return "\n".join(lines)

    def title(self) -> str:
        c = self.config
        hyper = {k: c[k] for k in ("beta", "rho", "eps") if c.get(k) is not None}
        hyper |= (c.get("factory") or {}).get("hyperparameters") or {}
        told = "".join(f"{k}={v}, " for k, v in hyper.items())
        B = self.schedule.batch_size
        batch = f"batch {B}" if B else "full batch"
        return f"{c['optimizer']} on {self.problem} ({batch}), {told}T={c['T']}"

    def plot(self, ax=None):
        """Errors against h on log-log axes, a line per field (x: left out of the fit), with
        reference slopes 1 and 2; returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            ax = plt.subplots(figsize=(5.5, 4.2))[1]
        h = np.asarray(self.h)
        top = []
        for k, f in self.fields.items():
            e = f.errors
            ok = np.isfinite(e)
            if ok.any():
                ax.loglog(h[ok], e[ok], "o-", label=f"{k} (slope {f.slope:.2f})")
                top.append(float(e[ok].max()))
                at = ok & (f.floor | f.outside | f.few_steps)
                if at.any():
                    ax.loglog(h[at], e[at], "kx", ms=10)
        if top:
            for order, style in ((1, ":"), (2, "--")):
                ax.loglog(h, max(top) * (h / h.max()) ** order, "k" + style, lw=0.8,
                          label=f"slope {order}")
        ax.set_xlabel("step size h")
        ax.set_ylabel(r"$\max_n \|\tilde\theta(nh) - \theta^{(n)}\|_2$")
        ax.set_title(self.title(), fontsize=8)
        ax.legend(fontsize=8)
        return ax

    def save(self, directory: str, *, plot: bool = False) -> list[str]:
        """Write ``convergence.json`` and ``convergence.csv`` (and ``convergence.png`` if
        ``plot``) into ``directory``, atomically; returns the paths. ValueError naming the
        path, and nothing written, if ``directory`` (or a folder above it) is a file."""
        check_directory(directory)
        paths = [os.path.join(directory, f"convergence.{x}") for x in ("json", "csv")]
        write_json(paths[0], self.to_dict())
        write_atomic(paths[1], self.csv())
        if plot:
            paths.append(os.path.join(directory, "convergence.png"))
            _save_figure(lambda ax: self.plot(ax), paths[-1], (5.5, 4.2))
        return paths


def _read(path: str, key: str) -> dict[str, Any]:
    """The JSON document at ``path``, which must hold ``key``: ValueError naming the path
    if there is no such file, it is not valid JSON, or it is not the result asked for."""
    if not os.path.isfile(path):
        raise ValueError(f"no result at {path!r}: no such file")
    d = read_json(path)
    if not isinstance(d, dict) or key not in d:
        raise ValueError(f"{path!r} is not a result file of bea (it has no {key!r})")
    return d


def check_directory(directory: str | os.PathLike) -> None:
    """Raise ValueError (one line naming the path) unless results can be saved in
    ``directory``: it is a directory, or can be created (nothing above it is a file)."""
    if not isinstance(directory, str | os.PathLike) or not os.fspath(directory):
        raise ValueError(f"directory must be a path, got {directory!r}")
    here = os.path.abspath(os.fspath(directory))
    while not os.path.lexists(here) and os.path.dirname(here) != here:
        here = os.path.dirname(here)
    if not os.path.isdir(here):
        what = "is a file" if here == os.path.abspath(os.fspath(directory)) else (
            f"lies under {here!r}, a file")
        raise ValueError(f"cannot save into {os.fspath(directory)!r}: it {what}, not a "
                         "directory")


def _save_figure(draw, path: str, size, ncols: int = 1) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=size, squeeze=False)
    draw(axes[0, 0] if ncols == 1 else axes[0])
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def member_name(params: dict[str, float], names: Sequence[str]) -> str:
    """'beta=0.5_rho=0.7': the shortest repr of each value, so that distinct values give
    distinct names that read back to the same floats."""
    return "_".join(f"{k}={float(params[k])!r}" for k in names)


@dataclasses.dataclass(frozen=True)
class GridResult:
    """One :class:`SweepResult` per combination of a hyperparameter grid
    (:func:`bea.grid`), in the order of ``params``; ``names`` are the gridded
    hyperparameters."""

    names: tuple[str, ...]
    params: list[dict[str, float]]
    results: list[SweepResult]
    seconds: float
    devices: int
    processes: int = 1

    def table(self) -> str:
        fields = self.results[0].fields
        head = " ".join(f"{k:>8}" for k in self.names) + " " + " ".join(
            f"{'slope ' + f:>14}" for f in fields) + " " + " ".join(
            f"{'err ' + f + ' @h_min':>20}" for f in fields)
        lines = [head]
        for c, r in zip(self.params, self.results, strict=True):
            slopes = " ".join(f"{r.slopes[f]:>14.3f}" for f in fields)
            errs = " ".join(f"{r.errors[f][-1]:>20.3e}" for f in fields)
            lines.append(" ".join(f"{float(c[k])!r:>8}" for k in self.names) + " " + slopes
                         + " " + errs)
            for h, step in r.diverged_at.items():
                lines.append(f"  ({member_name(c, self.names)}: the discrete run diverged at "
                             f"h={h:g}, step {step})")
        return "\n".join(lines)

    def plot(self, ax=None):
        """A heat map of the fitted slope per field over the grid (the last gridded
        hyperparameter on the x axis), one axis per field: ``ax`` an axis (one field) or a
        sequence of them, one per field; None draws a new figure. Returns the list of
        axes. ValueError naming the counts if they do not match the fields."""
        fields = list(self.results[0].fields)
        if ax is None:
            import matplotlib.pyplot as plt

            ax = plt.subplots(1, len(fields), figsize=(4.2 * len(fields), 3.6),
                              squeeze=False)[1][0]
        axes = list(np.atleast_1d(np.asarray(ax, dtype=object)).ravel())
        if len(axes) != len(fields):
            raise ValueError(f"{len(axes)} axes for the {len(fields)} fields "
                             f"{', '.join(fields)}: give one axis per field, or none")
        xs, ys = self.names[-1], self.names[:-1]
        xv = sorted({c[xs] for c in self.params})
        yv = sorted({tuple(c[k] for k in ys) for c in self.params})
        for ax, f in zip(axes, fields, strict=True):
            Z = np.full((len(yv), len(xv)), np.nan)
            for c, r in zip(self.params, self.results, strict=True):
                Z[yv.index(tuple(c[k] for k in ys)), xv.index(c[xs])] = r.slopes[f]
            im = ax.imshow(Z, origin="lower", cmap="viridis", aspect="auto")
            for i in range(len(yv)):
                for j in range(len(xv)):
                    ax.text(j, i, f"{Z[i, j]:.2f}", ha="center", va="center", color="w",
                            fontsize=8)
            ax.set_xticks(range(len(xv)), [f"{v:g}" for v in xv])
            ax.set_yticks(range(len(yv)), [",".join(f"{v:g}" for v in t) or "-" for t in yv])
            ax.set_xlabel(xs)
            ax.set_ylabel(",".join(ys))
            ax.set_title(f"fitted slope, {f}", fontsize=9)
            ax.figure.colorbar(im, ax=ax)
        return axes

    @classmethod
    def load(cls, directory: str | os.PathLike) -> GridResult:
        """Read a grid saved by :meth:`save`: ``grid.json`` and each combination's
        ``convergence.json`` (version 1 or 2). ValueError naming the path if one is
        missing or is not a grid result."""
        directory = os.fspath(directory)
        index = _read(os.path.join(directory, "grid.json"), "combinations")
        version = index.get("version", 1)
        if version not in (1, VERSION):
            raise ValueError(f"grid file version {version!r} is not one this bea reads "
                             f"(1 to {VERSION}); a newer bea wrote it")
        try:
            members = index["combinations"]
            results = [SweepResult.load(os.path.join(directory, m["name"])) for m in members]
            return cls(names=tuple(index["names"]),
                       params=[dict(m["params"]) for m in members], results=results,
                       seconds=float(index["seconds"]), devices=int(index["devices"]),
                       processes=int(index.get("processes", 1)))
        except (KeyError, TypeError) as e:
            what = repr(e.args[0]) if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
            raise ValueError(f"{os.path.join(directory, 'grid.json')!r} is not a complete "
                             f"grid result ({what} missing or malformed)") from None

    def save(self, directory: str, *, plot: bool = False) -> list[str]:
        """One directory per combination (``beta=0.5_rho=0.7/convergence.{json,csv}``),
        ``grid.json`` listing them with their fitted slopes, and ``grid_slopes.png`` if
        ``plot``; returns the paths written."""
        names = [member_name(c, self.names) for c in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"two grid members share a name: {names}")
        for name in names:  # every member's directory, before anything is written
            check_directory(os.path.join(directory, name))
        paths = []
        for name, r in zip(names, self.results, strict=True):
            paths += r.save(os.path.join(directory, name))
        index = [{"name": n, "params": c, "slopes": r.slopes}
                 for n, c, r in zip(names, self.params, self.results, strict=True)]
        config = {k: v for k, v in self.results[0].config.items() if k not in self.names}
        paths.append(os.path.join(directory, "grid.json"))
        write_json(paths[-1], {"version": VERSION, "config": config,
                               "names": list(self.names),
                               "combinations": index, "seconds": self.seconds,
                               "devices": self.devices, "processes": self.processes})
        if plot:
            paths.append(os.path.join(directory, "grid_slopes.png"))
            n = len(self.results[0].fields)
            _save_figure(self.plot, paths[-1], (4.2 * n, 3.6), ncols=n)
        return paths
