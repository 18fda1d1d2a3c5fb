"""``--grid`` and the compilation cache of ``python -m experiments.convergence``.

One result per combination, in the single-run schema, under ``OUT/<name>/convergence.json``
(and ``.csv``); ``OUT/grid.json`` lists them with their fitted slopes; a summary table is
printed and ``OUT/grid_slopes.png`` shows the fitted slopes as a heat map per field.
"""

from __future__ import annotations

import os
import sys

from experiments._cli import fail, write_atomic, write_json


def enable_compile_cache(path: str | None = None) -> None:
    """JAX's persistent compilation cache in ``path`` (default $BEA_JAX_CACHE or
    ./.jax_cache): a repeated sweep loads its programs instead of compiling them."""
    import jax

    path = path or os.environ.get("BEA_JAX_CACHE", os.path.abspath(".jax_cache"))
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def combo_name(c: dict, names) -> str:
    return "_".join(f"{k}={c[k]:g}" for k in names)


def summary_table(out: dict, names, fields) -> str:
    head = " ".join(f"{k:>8}" for k in names) + " " + " ".join(
        f"{'slope ' + f:>14}" for f in fields) + " " + " ".join(
        f"{'err ' + f + ' @h_min':>20}" for f in fields)
    lines = [head]
    for c, r in zip(out["params"], out["results"], strict=True):
        slopes = " ".join(f"{r['slopes'][f]:>14.3f}" for f in fields)
        errs = " ".join(f"{r['errors'][f][-1]:>20.3e}" for f in fields)
        lines.append(" ".join(f"{c[k]:>8g}" for k in names) + " " + slopes + " " + errs)
    return "\n".join(lines)


def heat_map(out: dict, names, fields, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    xs = names[-1]
    ys = names[:-1]
    xv = sorted({c[xs] for c in out["params"]})
    yv = sorted({tuple(c[k] for k in ys) for c in out["params"]})
    fig, axes = plt.subplots(1, len(fields), figsize=(4.2 * len(fields), 3.6), squeeze=False)
    for ax, f in zip(axes[0], fields, strict=True):
        Z = np.full((len(yv), len(xv)), np.nan)
        for c, r in zip(out["params"], out["results"], strict=True):
            Z[yv.index(tuple(c[k] for k in ys)), xv.index(c[xs])] = r["slopes"][f]
        im = ax.imshow(Z, origin="lower", cmap="viridis", aspect="auto")
        for i in range(len(yv)):
            for j in range(len(xv)):
                ax.text(j, i, f"{Z[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
        ax.set_xticks(range(len(xv)), [f"{v:g}" for v in xv])
        ax.set_yticks(range(len(yv)), [",".join(f"{v:g}" for v in t) or "-" for t in yv])
        ax.set_xlabel(xs)
        ax.set_ylabel(",".join(ys) or "")
        ax.set_title(f"fitted slope, {f}", fontsize=9)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path + ".tmp.png", dpi=110)
    plt.close(fig)
    os.replace(path + ".tmp.png", path)


def run_grid(args, problem, config: dict, prog: str) -> int:
    from bea.grid import GRID_PARAMS, grid_sweep, init_distributed, parse_grid
    from experiments.convergence import csv_text

    init_distributed()
    try:
        grid = parse_grid(args.grid)
        names = [k for k in GRID_PARAMS if k in grid]
        print(f"grid over {', '.join(f'{k}={grid[k]}' for k in names)}", flush=True)

        def progress(h, runs):
            print(f"  h={h:g}: {len(runs)} combinations done", file=sys.stderr, flush=True)

        out = grid_sweep(problem, args.optimizer, args.h, args.T, args.fields, grid=grid,
                         beta=args.beta, rho=args.rho, eps=args.eps,
                         batch_size=args.batch_size, seed=args.seed, rtol=args.rtol,
                         atol=args.atol, engine=args.engine, solver=args.solver,
                         progress=progress)
    except ValueError as e:
        fail(prog, str(e))
    os.makedirs(args.out, exist_ok=True)
    index = []
    for c, r in zip(out["params"], out["results"], strict=True):
        name = combo_name(c, names)
        d = os.path.join(args.out, name)
        write_json(os.path.join(d, "convergence.json"), {"config": {**config, **c}, **r})
        write_atomic(os.path.join(d, "convergence.csv"), csv_text(r))
        index.append({"name": name, "params": c, "slopes": r["slopes"]})
    write_json(os.path.join(args.out, "grid.json"),
               {"config": config, "combinations": index, "seconds": out["seconds"],
                "devices": out["devices"]})
    heat_map(out, names, list(args.fields), os.path.join(args.out, "grid_slopes.png"))
    print(summary_table(out, names, list(args.fields)))
    print(f"{out['seconds']:.1f} s on {out['devices']} device(s); wrote {args.out}/grid.json, "
          f"grid_slopes.png and {len(index)} x <combination>/convergence.{{json,csv}}")
    return 0
