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
import sys

from experiments._cli import Parser, fail  # noqa: E402

PROG = "experiments.train"


def build_parser() -> argparse.ArgumentParser:
    from bea.nn.data import DATASET_NAMES
    from bea.nn.models import MODEL_NAMES
    from bea.nn.train import OPTIMIZERS, TrainConfig

    d = TrainConfig()
    p = Parser(prog=PROG, description=__doc__.split("\n")[0],
                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", choices=MODEL_NAMES, default=d.model)
    p.add_argument("--dataset", choices=DATASET_NAMES, default=d.dataset)
    p.add_argument("--data-dir", default=None,
                   help="directory holding cifar-10-batches-py/ or cifar-100-python/")
    p.add_argument("--train-size", type=int, default=None,
                   help="keep only the first N training examples")
    p.add_argument("--test-size", type=int, default=None,
                   help="keep only the first N test examples")
    p.add_argument("--optimizer", choices=list(OPTIMIZERS), default=d.optimizer,
                   help="an Adam variant, or modified_gd: gradient descent on the modified "
                        "loss E + c ||grad E||_{1,eps} of eq. (8), c = c(h, beta, rho)")
    p.add_argument("--gd-lr", type=float, default=None,
                   help="modified_gd only: the GD step size (default: --h; c always uses --h)")
    p.add_argument("--h", type=float, default=d.h, help="learning rate")
    p.add_argument("--beta", type=float, default=d.beta)
    p.add_argument("--rho", type=float, default=d.rho)
    p.add_argument("--eps", type=float, default=d.eps)
    p.add_argument("--stop-loss", type=float, default=None,
                   help="stop the first time the training loss is below this")
    p.add_argument("--max-steps", type=int, default=d.max_steps)
    p.add_argument("--max-minutes", type=float, default=None)
    p.add_argument("--seed", type=int, default=d.seed,
                   help="initialisation seed (the first of --seeds)")
    p.add_argument("--seeds", type=int, default=d.seeds,
                   help="K initialisations per configuration (seeds --seed .. --seed+K-1), "
                        "run with the sweep members; directories OUT/[KEY=V/]seed=S/")
    p.add_argument("--steps-after-stop", type=int, default=d.steps_after_stop,
                   help="keep training N steps after the loss is first below --stop-loss "
                        "(room for the windowed read-outs of experiments.figures)")
    p.add_argument("--dtype", choices=("float32", "float64"), default=d.dtype)
    p.add_argument("--physical-batch", type=int, default=d.physical_batch,
                   help="examples per accumulation batch (all devices together)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--write-every", type=int, default=d.write_every,
                   help="rewrite history.csv every N steps")
    p.add_argument("--sweep", default=None, help="KEY=V1,V2,... with KEY in h, beta, rho, eps")
    p.add_argument("--sweep-mode", choices=("vmap", "sequential"), default=d.sweep_mode,
                   help="vmap: members in one compiled program (memory x members); "
                        "sequential: one at a time (faster per member on CPU)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="vmap at most N members per compiled program (default: all)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() (multi-host)")
    p.add_argument("--kill-at-step", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if args.distributed:
        import jax

        jax.distributed.initialize()

    if args.dtype == "float64":  # before any array exists (bea changes no setting itself)
        import bea

        bea.enable_x64()
    from bea.nn.data import DataError
    from bea.nn.train import ConfigError, TrainConfig, run, summaries_table, validate

    fields = {f for f in TrainConfig.__dataclass_fields__}
    cfg = TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})
    try:
        validate(cfg)
        summaries = run(cfg, args.out, resume=args.resume, progress=not args.no_progress,
                        kill_at_step=args.kill_at_step,
                        log=lambda s: print(s, file=sys.stderr))
    except (ConfigError, DataError) as e:
        fail(PROG, str(e))
    print(summaries_table(summaries))
    return summaries


if __name__ == "__main__":
    main()
