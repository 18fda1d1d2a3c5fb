"""Full-batch Adam training of Section 6: ``python -m experiments.train --help``.

Examples (CPU, seconds)::

    python -m experiments.train --model cnn_small --stop-loss 0.01 --out runs/one
    python -m experiments.train --model cnn_small --beta 0.97 --stop-loss 0.01 \\
        --sweep rho=0.97,0.98,0.99,0.995,0.999 --out runs/rho

    python -m experiments.train --model cnn_small --beta 0.97 --stop-loss 0.005 \
        --steps-after-stop 5 --seeds 16 --sweep-mode sequential \
        --sweep rho=0.97,0.98,0.99,0.995,0.999 --out runs/rho_seeds
    python -m experiments.train --optimizer modified_gd --gd-lr 0.3 ... (GD on eq. (8))

Paper size (GPU): ``--model resnet50 --dataset cifar10 --data-dir DATA --h 7.5e-5
--beta 0.97 --eps 1e-3 --stop-loss 0.01 --sweep rho=... --seeds K``. Errors in flags or
data exit with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

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

PROG = "experiments.train"
# flags that may differ between the processes of one run (process 0's --out is the run's)
_PER_PROCESS = ("out", "no_progress", "distributed", "kill_at_step", "wait_at_step")


def build_parser() -> argparse.ArgumentParser:
    from bea.data import DATASET_NAMES
    from bea.models import MODEL_NAMES
    from bea.nn.train import OPTIMIZERS, SWEEP_KEYS, TrainConfig

    d = TrainConfig()
    p = Parser(prog=PROG, description=__doc__.split("\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=MODEL_NAMES, default=d.model)
    p.add_argument("--dataset", choices=DATASET_NAMES, default=d.dataset)
    p.add_argument("--data-dir", default=None,
                   help="directory holding cifar-10-batches-py/ or cifar-100-python/")
    p.add_argument("--train-size", type=integer, default=None,
                   help="keep only the first N training examples (at most the data set's)")
    p.add_argument("--test-size", type=integer, default=None,
                   help="keep only the first N test examples (at most the data set's)")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), default=d.optimizer,
                   help="an optimizer of bea.optimizer_registry (adam: Definition 3.1), or "
                        "modified_gd: gradient descent on the modified loss "
                        "E + c ||grad E||_{1,eps} of eq. (8), c = c(h, beta, rho)")
    p.add_argument("--gd-lr", type=number, default=None,
                   help="modified_gd only: the GD step size (default: --h; c always uses --h)")
    p.add_argument("--h", type=number, default=d.h, help="learning rate")
    p.add_argument("--beta", type=number, default=d.beta)
    p.add_argument("--rho", type=number, default=d.rho)
    p.add_argument("--eps", type=number, default=d.eps)
    p.add_argument("--stop-loss", type=number, default=None,
                   help="stop the first time the training loss is below this")
    p.add_argument("--max-steps", type=integer, default=d.max_steps)
    p.add_argument("--max-minutes", type=number, default=None)
    p.add_argument("--seed", type=integer, default=d.seed,
                   help="initialisation seed (the first of --seeds)")
    p.add_argument("--seeds", type=integer, default=d.seeds,
                   help="K initialisations per configuration (seeds --seed .. --seed+K-1), "
                        "run with the sweep members; directories OUT/[KEY=V/]seed=S/")
    p.add_argument("--steps-after-stop", type=integer, default=d.steps_after_stop,
                   help="keep training N steps after the loss is first below --stop-loss "
                        "(room for the windowed read-outs of experiments.figures)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=d.dtype)
    p.add_argument("--physical-batch", type=integer, default=d.physical_batch,
                   help="examples per accumulation batch (all devices together)")
    p.add_argument("--checkpoint-every", type=integer, default=d.checkpoint_every)
    p.add_argument("--write-every", type=integer, default=d.write_every,
                   help="rewrite history.csv every N steps")
    p.add_argument("--sweep", type=key_values(SWEEP_KEYS), default=None,
                   help="KEY=V1,V2,... with KEY in h, beta, rho, eps")
    p.add_argument("--sweep-mode", choices=("vmap", "sequential"), default=d.sweep_mode,
                   help="vmap: members in one compiled program (memory x members); "
                        "sequential: one at a time (faster per member on CPU)")
    p.add_argument("--chunk-size", type=integer, default=None,
                   help="vmap at most N members per compiled program (default: all)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--distributed", action="store_true",
                   help="no longer needed (kept as an alias): the environment decides "
                        "(JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID, or a "
                        "SLURM / Open MPI job; see python -m experiments.launch)")
    p.add_argument("--kill-at-step", type=integer, default=None, help=argparse.SUPPRESS)
    p.add_argument("--wait-at-step", type=integer, default=None, help=argparse.SUPPRESS)
    return p


def check_command(args, given: set[str]) -> None:
    """ValueError (one line) for a flag that --sweep overrides and for more than
    :data:`MAX_MEMBERS` members, before any member is listed or built."""
    from bea.nn.train import MAX_MEMBERS  # imports JAX, computes nothing

    configs = 1
    if args.sweep is not None:
        key, vals = args.sweep  # parsed by key_values
        if key in given:
            raise ValueError(f"--{key} {getattr(args, key)} conflicts with --sweep "
                             f"{key}={','.join(map(repr, vals))}: give {key} in one of them")
        configs = len(vals)
    check_size(f"members (--seeds {args.seeds} x {configs} sweep value(s))",
               args.seeds * configs, MAX_MEMBERS)


# a signal inside the training steps saves and stops there (bea.nn.train.Interrupted)
@interruptible(PROG, " outside the training steps; a run already started continues with "
                     "--resume")
def main(argv: list[str] | None = None) -> list[dict]:
    p = build_parser()
    args = p.parse_args(argv)
    try:
        check_command(args, p.given)
    except ValueError as e:
        fail(PROG, str(e))
    from bea import distributed

    try:  # before any JAX computation: join the cluster the environment describes, if any
        distributed.initialize(PROG)
    except ValueError as e:
        fail(PROG, str(e))
    with distributed.fail_cleanly(PROG):
        return _main(args, distributed.is_main())


def _process0_flags(args) -> dict:
    """Process 0's flags, in every process (one broadcast; the same dict in one process)."""
    import jax

    mine = {k: v for k, v in vars(args).items()}
    if jax.process_count() == 1:
        return mine
    import numpy as np
    from jax.experimental import multihost_utils

    buf = np.zeros(1 << 16, np.uint8)
    text = json.dumps(mine, sort_keys=True).encode()
    if len(text) > len(buf):
        fail(PROG, f"the flags take {len(text)} bytes, more than the {len(buf)} shared "
                   "between processes")
    buf[:len(text)] = np.frombuffer(text, np.uint8)
    got = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    return json.loads(bytes(got).rstrip(b"\0").decode())


def _main(args, main_process: bool) -> list[dict]:
    import jax

    if args.dtype == "float64":  # before any array exists (bea changes no setting itself)
        import bea

        bea.enable_x64()
    from bea.data import DataError
    from bea.nn.train import (
        ConfigError,
        Interrupted,
        TrainConfig,
        all_agree,
        run,
        summaries_table,
        validate,
    )

    log = (lambda s: print(s, file=sys.stderr)) if main_process else (lambda s: None)
    if args.distributed:
        log(f"{PROG}: --distributed is no longer needed: the environment decides; running "
            f"as {jax.process_count()} process(es)")
    first = _process0_flags(args)
    differ = [k for k in sorted(first) if k not in _PER_PROCESS  # as JSON: nan equals nan
              and json.dumps(first[k]) != json.dumps(vars(args)[k])]
    fields = set(TrainConfig.__dataclass_fields__)
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    on_step = _on_step(args, log)
    out = first["out"]
    error = None
    try:
        if differ:
            k = differ[0]
            raise ConfigError(f"process {jax.process_index()} has --{k.replace('_', '-')} "
                              f"{vars(args)[k]!r} but process 0 has {first[k]!r}: every "
                              "process runs the same command")
        validate(cfg)
        if main_process:
            check_out_dir(out)
    except ValueError as e:  # ConfigError too
        error = e
    if not all_agree(error is None):
        fail(PROG, str(error) if error else "another process refused the run (process 0 "
                                            "says why)")
    try:
        summaries = run(cfg, out, resume=args.resume, progress=not args.no_progress,
                        on_step=on_step, log=log)
    except (ConfigError, DataError) as e:
        fail(PROG, str(e))
    except Interrupted as e:
        if main_process:
            sys.stderr.write(f"{PROG}: {e}\n")
            sys.stderr.flush()
        raise SystemExit(128 + e.signum) from None
    if main_process:
        print(summaries_table(summaries))
        for line in outcome_lines(summaries, cfg):
            print(line)
    return summaries


def _on_step(args, log):
    """The fault injection the hidden test flags ask for, as ``bea.nn.train.run``'s
    ``on_step`` callback (None without them): ``--kill-at-step N`` dies by SIGKILL after
    step N (like a killed job), ``--wait-at-step N`` waits there (up to 60 s) for SIGTERM or
    SIGINT (a signal mid-run)."""
    if args.kill_at_step is None and args.wait_at_step is None:
        return None
    import os
    import signal
    import time

    def on_step(step, stop_asked):
        if step == args.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == args.wait_at_step:
            log(f"waiting at step {step} for a signal")
            deadline = time.monotonic() + 60
            while not stop_asked() and time.monotonic() < deadline:
                time.sleep(0.01)

    return on_step


def outcome_lines(summaries: list[dict], cfg) -> list[str]:
    """What the table's status column means for the results, said in words: members that
    diverged, ran out of steps or time before --stop-loss, or reached it."""
    by: dict[str, list[dict]] = {}
    for s in summaries:
        by.setdefault(s["status"], []).append(s)
    n = len(summaries)
    names = lambda ss: ", ".join((s["member"] or "the run") for s in ss[:6]) + (  # noqa: E731
        f" and {len(ss) - 6} more" if len(ss) > 6 else "")
    lines = []
    if "diverged" in by:
        ss = by["diverged"]
        steps = ", ".join(str(s["diverged_step"]) for s in ss[:6])
        lines.append(f"DIVERGED: {len(ss)} of {n} member(s) ({names(ss)}) hit a non-finite "
                     f"loss or gradient (at step {steps}); their histories end there")
    if cfg.stop_loss is not None:
        for status, why in (("max_steps", f"--max-steps {cfg.max_steps}"),
                            ("max_minutes", f"--max-minutes {cfg.max_minutes}")):
            if status in by:
                ss = by[status]
                lines.append(f"{len(ss)} of {n} member(s) ({names(ss)}) stopped at {why} "
                             f"before the loss fell below --stop-loss {cfg.stop_loss:g}")
    elif "max_minutes" in by:
        ss = by["max_minutes"]
        lines.append(f"{len(ss)} of {n} member(s) stopped at --max-minutes {cfg.max_minutes}; "
                     "continue with --resume")
    return lines


if __name__ == "__main__":
    main()
