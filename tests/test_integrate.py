"""bea._integrate: the piecewise solve, the fixed-step solve and its two error estimates
(the sweep's check of the cheap one against the measured one: tests/test_convergence.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.linalg import expm

from bea import _integrate as sv

A0 = jnp.array([[-1.0, 3.0], [-3.0, -1.0]])  # a damped rotation: contracting
B = jnp.array([[0.0, 1.0], [0.0, 0.0]])


def linear_field(lam=0.0):
    """f(n, theta) = (A0 + 0.1 n B + lam I) theta: piecewise linear, exactly solvable."""
    return lambda n, th: (A0 + 0.1 * n * B + lam * jnp.eye(2)) @ th


def exact(h, N, lam=0.0):
    th, out = jnp.array([1.0, 0.5]), [jnp.array([1.0, 0.5])]
    for n in range(N):
        th = expm(h * (A0 + 0.1 * n * B + lam * jnp.eye(2))) @ th
        out.append(th)
    return np.asarray(jnp.stack(out))


@pytest.mark.parametrize("tableau", sorted(sv.TABLEAUS))
@pytest.mark.parametrize("h", [0.2, 0.05])
def test_fixed_step_error_estimates_on_an_exact_solution(tableau, h):
    """On a contracting flow the embedded bound covers the true error, and halving measures
    it (to the reference's own error, 2^-p of it)."""
    N = round(1.0 / h)
    solver = sv.TABLEAUS[tableau]()
    ys, bound = jax.jit(lambda: sv.solve_fixed(linear_field(), jnp.array([1.0, 0.5]), h, N,
                                               solver=solver, return_error=True))()
    fine = sv.solve_fixed(linear_field(), jnp.array([1.0, 0.5]), h, N, substeps=2,
                          solver=solver)
    true = float(np.max(np.linalg.norm(np.asarray(ys) - exact(h, N), axis=-1)))
    halving = float(jnp.max(jnp.linalg.norm(ys - fine, axis=-1)))
    assert true <= float(bound)
    if true > 1e-13:  # above round-off, halving is a measurement
        assert 0.8 * true <= halving <= 1.2 * true


def test_traced_substeps_is_one_program():
    """substeps traced: the solve and its halving reference come from one compilation and
    equal the solves with substeps fixed at trace time."""
    f = jax.jit(lambda m: sv.solve_fixed(linear_field(), jnp.array([1.0, 0.5]), 0.1, 10,
                                         substeps=m, active_steps=jnp.asarray(7)))
    one, two = f(jnp.asarray(1)), f(jnp.asarray(2))
    assert f._cache_size() == 1
    for m, got in ((1, one), (2, two)):
        want = sv.solve_fixed(linear_field(), jnp.array([1.0, 0.5]), 0.1, 10, substeps=m,
                              active_steps=jnp.asarray(7))
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=1e-15)
    np.testing.assert_array_equal(one[8:], jnp.broadcast_to(one[7], one[8:].shape))


def test_bad_options_name_the_value():
    f, th = linear_field(), jnp.array([1.0, 0.5])
    with pytest.raises(ValueError, match="unknown tableau 'rk4'"):
        sv.solve_with_error(f, th, 0.1, 3, method="fixed", tableau="rk4")
    with pytest.raises(ValueError, match="unknown estimate 'guess'"):
        sv.solve_with_error(f, th, 0.1, 3, method="fixed", estimate="guess")
    with pytest.raises(ValueError, match="unknown method 'euler'"):
        sv.solve_with_error(f, th, 0.1, 3, method="euler")


def test_a_block_after_a_failure_neither_solves_nor_moves_its_reference():
    """A block whose incoming state is NaN (its solve failed in an earlier block) is
    SKIPPED throughout, and its reference stays where the solve stopped instead of
    integrating on from there at the wrong n; under vmap (a grid) the NaN lane does no
    steps beside a live one (measured 0.7 s -> 0.3 ms for 16 intervals of y' = -y)."""
    def pair(y, ref):
        return sv.solve_pair(lambda n, z: -z, y, ref, 0.1, 4, start=4)

    ys, fine, status = jax.jit(jax.vmap(pair))(jnp.array([[jnp.nan, 1.0], [1.0, 2.0]]),
                                               jnp.array([[1.0, 2.0], [1.0, 2.0]]))
    assert status[0].tolist() == [sv.SKIPPED] * 4 and status[1].tolist() == [sv.OK] * 4
    np.testing.assert_array_equal(np.asarray(fine[0]), np.tile([1.0, 2.0], (5, 1)))
    np.testing.assert_allclose(np.asarray(fine[1, -1]), np.exp(-0.4) * np.array([1.0, 2.0]),
                               rtol=1e-10)
