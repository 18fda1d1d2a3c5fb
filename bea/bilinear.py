"""Section 5's bilinear model, made quantitative (Figures 1 and 2 of the paper).

    E(theta) = 1/2 (y - x theta_1 theta_2)^2,   x = 2, y = 3/2,   theta^(0) = (2.8, 3.5).

The minima lie on the hyperbola theta_1 theta_2 = c := y/x. With r = y - x theta_1 theta_2,

    grad E = -x r (theta_2, theta_1),   ||grad E||_1 = x |r| (|theta_1| + |theta_2|),

so ||grad E||_1 vanishes on the whole hyperbola, and "the region with smaller one-norm" means
smaller ||grad E||_1 *at equal loss*: the limit

    nu(theta*) = lim_{E -> 0} ||grad E||_1 / sqrt(2E) = x (|theta*_1| + |theta*_2|)

at the point theta* where a trajectory meets the hyperbola. The paper's cross is the point of
the hyperbola that minimises nu; :func:`cross` finds it by golden-section search along the
hyperbola (closed form (sqrt c, sqrt c)).

Drift. In the open first quadrant both components of grad E have the same sign, so the
eps -> 0 zeroth-order flow -g/sqrt(g^2 + eps) -> -sign(g) moves along +-(1, 1): it conserves
d = theta_2 - theta_1 and lands on the hyperbola at :func:`landing_point` (the point with the
same d), where nu = x sqrt(d^2 + 4c) (:func:`limiting_one_norm`). Every change of d, hence
of nu, comes from the first-order term of the modified equation, whose large-n form (8) is

    -g/R + h/2 ((1+rho)/(1-rho) g^2/R^2 - (1+beta)/(1-beta)) grad ||grad E||_{1,eps} / R,

i.e. for |g| >> sqrt(eps) the flow of E + h/2 ((1+beta)/(1-beta) - (1+rho)/(1-rho))
||grad E||_{1,eps} (:func:`bea._norms.correction_coefficient`): a positive coefficient (beta > rho)
penalises the one-norm and predicts nu to drop, a negative one predicts it to rise. We measure

    drift = nu(theta^(N)) - nu(theta^(0)),   N = T/h,

against the reference nu(theta^(0)) of the zeroth-order flow; nu is insensitive to the
oscillation of small-eps Adam across the hyperbola (|g| ~ sqrt(eps)), which moves along (1, 1).
Paths are compared with their modified ODEs only on the window n <= w before the loss first
falls below r_min^2/2 (|r| < r_min), where |g| >> sqrt(eps) and the expansion is meaningful.
"""

from __future__ import annotations

import math
from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from bea._integrate import solve
from bea._norms import correction_coefficient, perturbed_one_norm
from bea.fields.full_batch import adam_field
from bea.optimizers import adam, trajectory
from bea.problems import Problem, bilinear

__all__ = [
    "Config", "Panel", "FIGURES", "EPS", "T", "R_MIN", "DRIFT_TOL", "STEP_BUCKET",
    "default_problem", "hyperbola", "residual", "limiting_one_norm", "landing_point",
    "zeroth_order_line",
    "golden_section", "cross", "norm_grid", "Paths", "path_norms", "run_paths", "window_end",
    "path_distance", "predicted_sign", "observed_sign", "measure", "figure_records",
]

# The chosen settings (the paper does not print its own): small eps, short memories so that
# N = T/h >> 1/(1 - max(beta, rho)) and (8) applies, and h in Adam's stable regime here.
EPS = 1e-8
T = 3.0  # every path meets the hyperbola by t ~ 2.3; nu has settled by T = 3
R_MIN = 0.1  # comparison window: |r| >= 0.1, i.e. |g_j| >~ 0.1 >> sqrt(EPS) = 1e-4
DRIFT_TOL = 1e-4  # |drift| below this counts as no drift (sign 0)
STEP_BUCKET = 2400  # the longest run drawn: T / 0.00125


class Config(NamedTuple):
    h: float
    beta: float
    rho: float
    eps: float = EPS


class Panel(NamedTuple):
    title: str
    vary: str  # the hyperparameter that changes along the panel: "beta", "rho" or "h"
    configs: tuple[Config, ...]


FIGURES: dict[int, tuple[Panel, ...]] = {
    1: (
        Panel("beta varies (h = 0.01, rho = 0.5)", "beta",
              tuple(Config(0.01, b, 0.5) for b in (0.3, 0.6, 0.75, 0.9))),
        Panel("rho varies (h = 0.01, beta = 0.5)", "rho",
              tuple(Config(0.01, 0.5, r) for r in (0.3, 0.6, 0.75, 0.9))),
    ),
    2: (
        Panel("h varies, beta > rho (beta = 0.9, rho = 0.5)", "h",
              tuple(Config(h, 0.9, 0.5) for h in (0.00125, 0.0025, 0.005, 0.01))),
        Panel("h varies, rho > beta (beta = 0.5, rho = 0.9)", "h",
              tuple(Config(h, 0.5, 0.9) for h in (0.00125, 0.0025, 0.005, 0.01))),
    ),
}


@lru_cache(maxsize=1)
def default_problem() -> Problem:
    """The bilinear problem of Section 5 (built once)."""
    return bilinear()


def _xy(problem: Problem) -> tuple[float, float]:
    return float(problem.data["x"][0]), float(problem.data["y"][0])


def hyperbola(theta1: Float[Array, "..."], x: float = 2.0, y: float = 1.5) -> Float[Array, "..."]:
    """theta_2 = (y/x)/theta_1: the line of global minima (Section 5)."""
    return (y / x) / theta1


def residual(theta: Float[Array, "... 2"], x: float = 2.0, y: float = 1.5) -> Float[Array, "..."]:
    """r = y - x theta_1 theta_2, so E = r^2/2 and grad E = -x r (theta_2, theta_1)."""
    return y - x * theta[..., 0] * theta[..., 1]


def limiting_one_norm(theta: Float[Array, "... 2"], x: float = 2.0,
                      y: float = 1.5) -> Float[Array, "..."]:
    """nu = x sqrt((theta_2 - theta_1)^2 + 4y/x): lim ||grad E||_1/sqrt(2E) at the landing point.

    Equals x (theta*_1 + theta*_2) at theta* = :func:`landing_point` (first quadrant)."""
    d = theta[..., 1] - theta[..., 0]
    return x * jnp.sqrt(d * d + 4 * y / x)


def _nu_np(theta, x: float, y: float) -> float:
    d = float(theta[1] - theta[0])
    return x * math.sqrt(d * d + 4 * y / x)


def landing_point(theta: Float[Array, "... 2"], x: float = 2.0,
                  y: float = 1.5) -> Float[Array, "... 2"]:
    """The hyperbola point with the same d = theta_2 - theta_1: where the eps -> 0 zeroth-order
    flow from theta (first quadrant) meets the minima."""
    d = theta[..., 1] - theta[..., 0]
    t1 = (-d + jnp.sqrt(d * d + 4 * y / x)) / 2
    return jnp.stack([t1, t1 + d], axis=-1)


def zeroth_order_line(problem: Problem | None = None) -> Float[Array, "2 2"]:
    """The eps -> 0 zeroth-order path: the segment from theta^(0) along (-1, -1) to its
    landing point (no drift: d = theta_2 - theta_1 is conserved)."""
    problem = default_problem() if problem is None else problem
    x, y = _xy(problem)
    return jnp.stack([problem.theta0, landing_point(problem.theta0, x, y)])


def golden_section(f, a: float, b: float, iters: int = 80) -> Float[Array, ""]:
    """argmin of a unimodal f on [a, b] by golden-section search (lax.fori_loop, jit-able).

    Each iteration shrinks the bracket by 0.618; 80 iterations reach float64 resolution."""
    invphi = (math.sqrt(5) - 1) / 2

    def body(_, ab):
        lo, hi = ab
        c = hi - invphi * (hi - lo)
        d = lo + invphi * (hi - lo)
        left = f(c) < f(d)
        return jnp.where(left, lo, c), jnp.where(left, d, hi)

    lo, hi = jax.lax.fori_loop(0, iters, body, (jnp.asarray(a, float), jnp.asarray(b, float)))
    return (lo + hi) / 2


def cross(x: float = 2.0, y: float = 1.5, *, level: float = 0.0,
          eps: float = 0.0) -> Float[Array, " 2"]:
    """The paper's cross: the point of minimal one-norm of the gradient on the minima.

    ``level = 0``: minimise nu = x (theta_1 + c/theta_1) along the hyperbola theta_2 = c/theta_1
    (c = y/x). ``level = s > 0``: minimise the perturbed one-norm ||grad E||_{1,eps} along the
    level set x theta_1 theta_2 = y - s (the cross as the limit s -> 0 of these minimisers).
    Golden section over log theta_1 in [log(c)/2 - 5, log(c)/2 + 5]; closed form (sqrt c, sqrt c).
    """
    c = (y - level) / x

    def objective(s):
        t1 = jnp.exp(s)
        if level == 0.0:
            return x * (t1 + c / t1)
        g = level * x * jnp.stack([c / t1, t1])  # |grad E| on the level set
        return perturbed_one_norm(g, eps)

    mid = 0.5 * math.log(c)
    t1 = jnp.exp(golden_section(objective, mid - 5.0, mid + 5.0))
    return jnp.stack([t1, c / t1])


def norm_grid(problem: Problem, t1: Float[Array, " a"], t2: Float[Array, " b"],
              eps: float | None = None) -> Float[Array, "b a"]:
    """||grad E||_1 (or ||grad E||_{1,eps} if eps is given) on the grid t1 x t2 (for contours)."""
    T1, T2 = jnp.meshgrid(t1, t2)
    pts = jnp.stack([T1.ravel(), T2.ravel()], axis=-1)
    x, y = _xy(problem)
    g1, gp, _ = _path_norms(problem.loss, problem.data, pts, 0.0 if eps is None else eps, x, y)
    return (g1 if eps is None else gp).reshape(T1.shape)


class Paths(NamedTuple):
    discrete: np.ndarray  # (N+1, 2): Adam's theta^(n), n = 0..N
    order1: np.ndarray  # (w+1, 2): first-order modified ODE (Remark 3.7) at nh, n <= w
    order0: np.ndarray  # (w+1, 2): zeroth-order flow -g/sqrt(g^2+eps) at nh, n <= w
    window: int  # w: the last step compared with the ODEs


def _bucket(num_steps: int) -> int:
    """Programs are compiled for max(N, STEP_BUCKET) steps and masked with ``active_steps``, so
    every configuration of Figures 1 and 2 shares one compilation."""
    return max(num_steps, STEP_BUCKET)


@partial(jax.jit, static_argnames=("loss", "num_steps"))
def _discrete(loss, theta0, data, h, beta, rho, eps, num_steps, active):
    return trajectory(adam(h, beta, rho, eps), loss, theta0, None, num_steps, data=data,
                      active_steps=active)


@partial(jax.jit, static_argnames=("loss", "num_steps", "order"))
def _ode(loss, theta0, data, h, beta, rho, eps, num_steps, active, order):
    f = adam_field(lambda th: loss(th, data), h, beta, rho, eps, order=order)
    return solve(f, theta0, h, num_steps, rtol=1e-9, atol=1e-11, max_steps=512,
                 active_steps=active)


@partial(jax.jit, static_argnames=("loss",))
def _path_norms(loss, data, path, eps, x, y):
    g = jax.vmap(jax.grad(lambda th: loss(th, data)))(path)
    return (jnp.sum(jnp.abs(g), axis=-1), jnp.sum(jnp.sqrt(g * g + eps), axis=-1),
            limiting_one_norm(path, x, y))


def path_norms(problem: Problem, path: Float[Array, "n 2"], eps: float):
    """(||grad E||_1, ||grad E||_{1,eps}, nu) at every row of ``path``, as numpy arrays (one
    compiled program per bucket of lengths)."""
    x, y = _xy(problem)
    path = np.asarray(path)
    n = len(path)
    padded = np.concatenate([path, np.repeat(path[-1:], _bucket(n) - n + 1, axis=0)])
    out = _path_norms(problem.loss, problem.data, padded, eps, x, y)
    return tuple(np.asarray(a)[:n] for a in out)


def window_end(path: Float[Array, "N+1 2"], r_min: float = R_MIN, x: float = 2.0,
               y: float = 1.5) -> int:
    """w: the first step with |r| < r_min (the path is then within reach of the minima and
    |g| soon falls to sqrt(eps)); N if there is none."""
    small = np.abs(np.asarray(residual(path, x, y))) < r_min
    return int(np.argmax(small)) if small.any() else len(path) - 1


def run_paths(config: Config, T_end: float = T, problem: Problem | None = None, *,
              odes: bool = True, r_min: float = R_MIN) -> Paths:
    """Adam's path for ``config`` up to T_end, and (``odes``) the first-order modified ODE and
    the zeroth-order flow from the same start, solved piecewise up to the window end w."""
    problem = default_problem() if problem is None else problem
    x, y = _xy(problem)
    N = round(T_end / config.h)
    if N < 1 or abs(T_end / config.h - N) > 1e-9 * max(1.0, N):
        raise ValueError(f"T/h must be a positive integer: T={T_end}, h={config.h}")
    args = (problem.loss, problem.theta0, problem.data, config.h, config.beta, config.rho,
            config.eps)
    disc = np.asarray(_discrete(*args, _bucket(N), N))[: N + 1]
    w = window_end(disc, r_min, x, y)
    if not odes:
        empty = np.zeros((0, 2))
        return Paths(disc, empty, empty, w)
    o1 = np.asarray(_ode(*args, _bucket(N), w, 1))[: w + 1]
    o0 = np.asarray(_ode(*args, _bucket(N), w, 0))[: w + 1]
    return Paths(disc, o1, o0, w)


def path_distance(a: Float[Array, "n 2"], b: Float[Array, "n 2"]) -> float:
    """max_n ||a_n - b_n||_2 over the common rows (docs/math.md, section 6's metric); NaN if any
    distance is not finite."""
    k = min(len(a), len(b))
    dist = np.linalg.norm(np.asarray(a[:k]) - np.asarray(b[:k]), axis=-1)
    return float(np.max(dist)) if np.all(np.isfinite(dist)) else float("nan")


def predicted_sign(config: Config) -> int:
    """Direction of nu's drift that (8) predicts: -sign((1+beta)/(1-beta) - (1+rho)/(1-rho))."""
    return -int(np.sign(correction_coefficient(config.h, config.beta, config.rho)))


def observed_sign(drift: float, tol: float = DRIFT_TOL) -> int:
    """sign(drift), 0 when |drift| < tol."""
    return 0 if abs(drift) < tol else int(np.sign(drift))


def _subsample(a, k: int = 101) -> list[float]:
    a = np.asarray(a)
    idx = np.unique(np.linspace(0, len(a) - 1, k).round().astype(int))
    return [float(v) for v in a[idx]]


def measure(config: Config, paths: Paths, T_end: float = T,
            problem: Problem | None = None) -> dict:
    """The JSON record of one configuration: hyperparameters, end point, norms along the path,
    drift (observed and predicted by (8)), and discrete-vs-ODE distances on the window."""
    problem = default_problem() if problem is None else problem
    x, y = _xy(problem)
    p = paths.discrete
    N = len(p) - 1
    g1, gp, nu = path_norms(problem, p, config.eps)
    drift = float(nu[-1] - nu[0])
    coef = float(correction_coefficient(config.h, config.beta, config.rho))
    w = paths.window
    rec = {
        "h": config.h, "beta": config.beta, "rho": config.rho, "eps": config.eps,
        "T": T_end, "num_steps": N,
        "end_point": [float(v) for v in p[-1]],
        "end_loss": float(0.5 * residual(p[-1], x, y) ** 2),
        "end_grad_one_norm": float(g1[-1]),
        "end_grad_perturbed_one_norm": float(gp[-1]),
        "end_limiting_one_norm": float(nu[-1]),
        "landing_point": [float(v) for v in landing_point(p[-1], x, y)],
        "drift": drift,
        "correction_coefficient": coef,
        "coefficient_bracket": float((1 + config.beta) / (1 - config.beta)
                                     - (1 + config.rho) / (1 - config.rho)),
        "predicted_sign": predicted_sign(config),
        "observed_sign": observed_sign(drift),
        "path": {"step": _subsample(np.arange(N + 1)), "grad_one_norm": _subsample(g1),
                 "grad_perturbed_one_norm": _subsample(gp), "limiting_one_norm": _subsample(nu)},
        "window_step": w, "window_time": w * config.h, "r_min": R_MIN,
    }
    rec["signs_agree"] = rec["predicted_sign"] == rec["observed_sign"]
    if len(paths.order1):
        rec.update({
            "distance_order1": path_distance(p[: w + 1], paths.order1),
            "distance_order0": path_distance(p[: w + 1], paths.order0),
            "window_drift": {
                "discrete": float(nu[w] - nu[0]),
                "order1": float(_nu_np(paths.order1[-1], x, y) - nu[0]),
                "order0": float(_nu_np(paths.order0[-1], x, y) - nu[0]),
            },
        })
    return rec


def figure_records(figure: int, *, odes: bool = True,
                   problem: Problem | None = None) -> list[tuple[Panel, list[tuple[Paths, dict]]]]:
    """Run every configuration of figure 1 or 2: per panel, (paths, record) per configuration."""
    if figure not in FIGURES:
        raise ValueError(f"unknown figure {figure!r}; choose from {sorted(FIGURES)}")
    problem = default_problem() if problem is None else problem
    out = []
    for panel in FIGURES[figure]:
        runs = []
        for cfg in panel.configs:
            paths = run_paths(cfg, T, problem, odes=odes)
            runs.append((paths, measure(cfg, paths, T, problem)))
        out.append((panel, runs))
    return out

