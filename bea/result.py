"""Typed results of convergence sweeps, and the files written from them.

A :class:`SweepResult` is what :func:`bea.sweep` returns (one optimizer, one ladder of h):
per field, the error max_n ||theta~(nh) - theta^(n)||_2 at every h, the fitted and local
slopes, the floor flags and how each solve was measured. ``save(directory)`` writes
``convergence.json`` (strict JSON: NaN as null) and ``convergence.csv``, and a PNG where
asked; :meth:`SweepResult.load` reads the JSON back. A :class:`GridResult` holds one
SweepResult per hyperparameter combination of :func:`bea.grid`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bea._io import read_json, write_atomic, write_json
from bea.measure import MIN_STEPS

__all__ = ["SweepResult", "GridResult"]


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """The measured errors and orders of one sweep (docs/math.md, section 6).

    Per field (a key of ``errors``): ``errors`` and ``solver_error`` (arrays over ``h``,
    coarsest first; NaN where the discrete run diverged), ``floor`` (True where the error
    is within 10x of the solver error or the round-off floor), ``outside`` (True where the
    error is as large as the distance the modified flow travels: the expansion explains
    nothing there), ``few_steps`` (True where N is below :data:`bea.measure.MIN_STEPS`: too
    few steps to show an order), ``slopes`` (least-squares slope of log error on log h over
    the points carrying none of these flags),
    ``local_slopes`` (between neighbouring h), and per h the ``solver`` ('fixed' or
    'adaptive'), its ``tableau`` and how its error was measured (``estimate``: 'embedded',
    'halving' or 'refined'). ``diverged_at`` maps an h whose discrete run produced NaN/inf
    to the step where it did; ``ode_diverged_at`` gives, per field and h, the first
    non-finite row of the modified path (None if finite). ``platform`` and ``placement``
    say where the sweep ran and why (bea.placement)."""

    config: dict[str, Any]
    problem: str
    h: np.ndarray
    N: np.ndarray
    errors: dict[str, np.ndarray]
    solver_error: dict[str, np.ndarray]
    floor: dict[str, np.ndarray]
    outside: dict[str, np.ndarray]
    slopes: dict[str, float]
    local_slopes: dict[str, np.ndarray]
    solver: dict[str, tuple]
    tableau: dict[str, tuple]
    estimate: dict[str, tuple]
    diverged_at: dict[float, int]
    ode_diverged_at: dict[str, tuple]
    seconds: float
    devices: int
    platform: str
    placement: str = ""
    few_steps: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.few_steps:  # built without the flag (or read from an older file)
            object.__setattr__(self, "few_steps", {k: np.zeros(len(self.h), bool)
                                                   for k in self.errors})

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.errors)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``convergence.json``."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["diverged_at"] = {repr(float(h)): int(n) for h, n in self.diverged_at.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepResult:
        def arr(x, dtype=float):
            return np.asarray([np.nan if v is None else v for v in x], dtype)

        per = {k: {f: arr(v) for f, v in d[k].items()} for k in ("errors", "solver_error")}
        return cls(config=d["config"], problem=d["problem"], h=arr(d["h"]),
                   N=np.asarray(d["N"], int), **per,
                   floor={f: np.asarray(v, bool) for f, v in d["floor"].items()},
                   outside={f: np.asarray(d.get("outside", {}).get(f, [False] * len(v)), bool)
                            for f, v in d["floor"].items()},
                   slopes={f: np.nan if v is None else float(v)
                           for f, v in d["slopes"].items()},
                   local_slopes={f: arr(v) for f, v in d["local_slopes"].items()},
                   solver={f: tuple(v) for f, v in d["solver"].items()},
                   tableau={f: tuple(v) for f, v in d["tableau"].items()},
                   estimate={f: tuple(v) for f, v in d["estimate"].items()},
                   diverged_at={float(h): int(n) for h, n in d["diverged_at"].items()},
                   ode_diverged_at={f: tuple(v) for f, v in d["ode_diverged_at"].items()},
                   seconds=float(d["seconds"]), devices=int(d["devices"]),
                   platform=d["platform"], placement=d.get("placement", ""),
                   few_steps={f: np.asarray(v, bool)
                              for f, v in d.get("few_steps", {}).items()})

    @classmethod
    def load(cls, path: str) -> SweepResult:
        """Read ``convergence.json`` (a file, or the directory holding it)."""
        if os.path.isdir(path):
            path = os.path.join(path, "convergence.json")
        return cls.from_dict(read_json(path))

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
        """The table's mark of point ``i`` of ``field``: '*' at the floor, '!' outside the
        expansion, '<' too few steps, ' ' fitted (the first that applies)."""
        return ("*" if self.floor[field][i] else "!" if self.outside[field][i] else
                "<" if self.few_steps[field][i] else " ")

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
                nan = "diverged" if h in self.diverged_at else "field NaN"
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
            for h, step in zip(self.h, self.ode_diverged_at[k], strict=True):
                if step is not None and h not in self.diverged_at:
                    lines.append(f"h={h:g}: the {k} field is NaN/inf from step {step - 1} on "
                                 "(the discrete run is finite: the field is not defined "
                                 "there; is the loss smooth enough?)")
        return "\n".join(lines)

    def title(self) -> str:
        c = self.config
        hyper = ", ".join(f"{k}={c[k]}" for k in ("beta", "rho", "eps") if c.get(k) is not None)
        batch = f"batch {c['batch_size']}" if c.get("batch_size") else "full batch"
        return f"{c['optimizer']} on {self.problem} ({batch}), {hyper}, T={c['T']}"

    def plot(self, ax=None):
        """Errors against h on log-log axes, a line per field (x: left out of the fit), with
        reference slopes 1 and 2; returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            ax = plt.subplots(figsize=(5.5, 4.2))[1]
        h = np.asarray(self.h)
        top = []
        for k, e in self.errors.items():
            ok = np.isfinite(e)
            if ok.any():
                ax.loglog(h[ok], e[ok], "o-", label=f"{k} (slope {self.slopes[k]:.2f})")
                top.append(float(e[ok].max()))
                at = ok & (self.floor[k] | self.outside[k] | self.few_steps[k])
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

    def plot(self, axes):
        """A heat map of the fitted slope per field over the grid (the last gridded
        hyperparameter on the x axis)."""
        fields = self.results[0].fields
        xs, ys = self.names[-1], self.names[:-1]
        xv = sorted({c[xs] for c in self.params})
        yv = sorted({tuple(c[k] for k in ys) for c in self.params})
        for ax, f in zip(np.atleast_1d(axes), fields, strict=True):
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
        write_json(paths[-1], {"config": config, "names": list(self.names),
                               "combinations": index, "seconds": self.seconds,
                               "devices": self.devices, "processes": self.processes})
        if plot:
            paths.append(os.path.join(directory, "grid_slopes.png"))
            n = len(self.results[0].fields)
            _save_figure(self.plot, paths[-1], (4.2 * n, 3.6), ncols=n)
        return paths
