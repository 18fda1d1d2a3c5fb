"""Issue 21's setting, as a new user writes it: a 97-parameter tanh MLP (6-8-4-1) as a nested
dict, 256 random examples, ``optax.adam(lr, b1=0.9, b2=0.95)`` at its default eps = 1e-8,
T = 0.4. Prints every progress record with the seconds since the previous one, then the
table (docs/sweeps.md, "Stiff intervals").

    python -m benchmarks.stiff_user 0.1,0.05 [max_steps=4096] [solver=auto]
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import optax

import bea

SIZES = [(6, 8), (8, 4), (4, 1)]


def problem():
    k = jax.random.split(jax.random.PRNGKey(0), 5)
    params = {f"layer{i}": {"w": jax.random.normal(k[i], s) / jnp.sqrt(s[0]),
                            "b": jnp.zeros(s[1])} for i, s in enumerate(SIZES)}
    X = jax.random.normal(k[3], (256, 6))
    y = jnp.sin(X[:, :1]) + 0.1 * jax.random.normal(k[4], (256, 1))
    return params, {"x": X, "y": y}


def loss(p, batch):
    a = batch["x"]
    for i in range(len(SIZES)):
        a = a @ p[f"layer{i}"]["w"] + p[f"layer{i}"]["b"]
        if i < len(SIZES) - 1:
            a = jnp.tanh(a)
    return jnp.mean((a - batch["y"]) ** 2)


def main(argv: list[str]) -> None:
    bea.enable_x64()
    hs = [float(x) for x in argv[0].split(",")] if argv else [0.1, 0.05]
    extra = dict(a.split("=") for a in argv[1:])
    if "max_steps" in extra:
        extra["max_steps"] = int(extra["max_steps"])
    params, data = problem()
    last = [time.perf_counter()]

    def progress(r):
        now = time.perf_counter()
        print(f"{now - last[0]:7.1f} s  {r}", flush=True)
        last[0] = now

    res = bea.sweep(loss, params, data, optimizer=lambda lr: optax.adam(lr, b1=0.9, b2=0.95),
                    optimizer_name="adam b2=0.95", h=hs, T=0.4, progress=progress, **extra)
    print(res.table())
    print(f"{res.seconds:.1f} s; solver per h: {res.solver}")


if __name__ == "__main__":
    main(sys.argv[1:])
