"""bea.nn._metrics: the logged norms, the norm's excess over P sqrt(eps) in its
cancellation-free form, the two-norm penalty beside it, and histories written before
these columns existed."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bea.nn import _metrics as M
from bea.nn import _run_files as H
from bea.nn import read_history
from bea.nn import train as T

metrics = jax.jit(M.gradient_metrics)  # one compilation, not one per eager operation


def _gradient(seed=0, p=4096, scale=1e-5):
    """A pytree of float64 gradient entries of magnitude ~scale, signs mixed."""
    rng = np.random.default_rng(seed)
    v = scale * rng.standard_normal(p) * rng.uniform(0.1, 1.0, p)
    return {"w": jnp.asarray(v[: p // 2].reshape(32, -1)), "b": jnp.asarray(v[p // 2:])}


def test_excess_is_exact_in_float32_where_the_direct_subtraction_keeps_no_digit():
    """|g_j| ~ 1e-5 << sqrt(1e-3) = 0.032: in float32 sqrt(g^2 + eps) rounds to sqrt(eps),
    so ||g||_{1,eps} - P sqrt(eps) computed directly keeps no correct digit; the
    cancellation-free sum agrees with float64 direct subtraction to float32 round-off."""
    eps = 1e-3
    g64 = _gradient()
    g32 = {k: v.astype(jnp.float32) for k, v in g64.items()}
    g32as64 = {k: v.astype(jnp.float64) for k, v in g32.items()}  # the same numbers
    p = sum(v.size for v in g64.values())
    reference = float(metrics(g32as64, eps)["perturbed_one_norm"] - p * np.sqrt(eps))  # float64
    m32 = metrics(g32, jnp.float32(eps))
    direct32 = float(m32["perturbed_one_norm"] - jnp.float32(p) * jnp.sqrt(jnp.float32(eps)))
    free32 = m32["perturbed_one_norm_excess"]
    assert free32.dtype == m32["perturbed_one_norm"].dtype == jnp.float32
    assert reference > 0
    assert abs(direct32 - reference) > 0.5 * reference  # no digit left (0 or noise)
    assert float(free32) == pytest.approx(reference, rel=2e-5)
    # the float64 reference itself: exact arithmetic of the same sum
    exact = math.fsum(x**2 / (math.sqrt(x**2 + eps) + math.sqrt(eps))
                      for v in g32as64.values() for x in np.asarray(v).ravel().tolist())
    assert reference == pytest.approx(exact, rel=1e-6)
    assert float(free32) == pytest.approx(exact, rel=1e-6)


def test_excess_two_norm_penalty_and_share_against_their_definitions():
    """Mixed magnitudes in float64: excess = sum(sqrt(g^2+eps) - sqrt(eps)), bounded by
    the two-norm penalty and by ||g||_1; the share counts |g_j| > sqrt(eps)."""
    eps = 1e-4
    g = {"a": jnp.array([0.5, -0.02, 1e-4]), "b": jnp.array([[-3e-3, 0.0, 2.0]])}
    v = np.array([0.5, -0.02, 1e-4, -3e-3, 0.0, 2.0])
    m = metrics(g, eps)
    assert set(m) == set(M.GRADIENT_METRICS)
    excess = np.sum(np.sqrt(v**2 + eps) - np.sqrt(eps))
    assert float(m["perturbed_one_norm_excess"]) == pytest.approx(excess, rel=1e-13)
    assert float(m["perturbed_one_norm"] - 6 * np.sqrt(eps)) == pytest.approx(excess, rel=1e-12)
    assert float(m["two_norm_penalty"]) == pytest.approx(np.sum(v**2) / (2 * np.sqrt(eps)),
                                                         rel=1e-14)
    assert excess < float(m["two_norm_penalty"]) and excess < np.sum(np.abs(v))
    assert float(m["share_above_sqrt_eps"]) == pytest.approx(3 / 6)  # 0.5, 0.02, 2.0 > 0.01


@pytest.mark.parametrize("eps,regime", [(1e-3, "two-norm"), (1e-16, "one-norm")])
def test_at_large_eps_the_norm_is_a_two_norm_penalty(eps, regime):
    """|g_j| ~ 1e-5: at eps = 1e-3 the excess is ||g||_2^2 / (2 sqrt eps) to 1e-6 (the
    next term is -g^4 / (8 eps^1.5)); at eps = 1e-16 it is ||g||_1 to 1e-2,
    nothing like the penalty."""
    g = _gradient(scale=1e-5)
    m = metrics(g, eps)
    ratio = float(m["perturbed_one_norm_excess"] / m["two_norm_penalty"])
    if regime == "two-norm":
        assert ratio == pytest.approx(1.0, abs=1e-6) and ratio < 1
        assert float(m["share_above_sqrt_eps"]) == 0.0
    else:
        assert ratio < 1e-2
        assert float(m["perturbed_one_norm_excess"]) == pytest.approx(
            float(m["one_norm"]), rel=1e-2)
        assert float(m["share_above_sqrt_eps"]) > 0.95


@pytest.mark.parametrize("which", [0, 1])
def test_an_earlier_history_still_reads_with_the_added_columns_nan(tmp_path, which):
    """A history written with the twelve columns of before (no excess, penalty, share) or
    the fifteen (no finite-n c(n)) reads through the public reader: its own values, NaN in
    the columns it lacks; a history with any other header is still refused."""
    old = H.EARLIER_COLUMNS[which]
    assert set(H.ADDED_COLUMNS) == {"perturbed_one_norm_excess", "two_norm_penalty",
                                    "share_above_sqrt_eps", "correction_coefficient_n",
                                    "modified_loss_n"}
    assert H.COLUMNS[-2:] == M.FINITE_N_COLUMNS  # appended at the end
    path = tmp_path / "history.csv"
    lines = [",".join(old)] + [",".join(["0"] + [repr(0.5 + i) for i in range(len(old) - 1)])]
    path.write_text("\n".join(lines) + "\n")
    rows = read_history(str(path))
    assert len(rows) == 1 and tuple(rows[0]) == H.COLUMNS
    assert rows[0]["train_loss"] == 0.5 and rows[0]["modified_loss"] == 0.5 + 10
    assert all(math.isnan(rows[0][c]) for c in H.COLUMNS[len(old):])
    # resuming such a run: its NaN columns are "not logged", not a divergence
    assert T._status(rows, T.TrainConfig()) == "running"
    assert T._status([rows[0] | {"two_norm": math.inf}], T.TrainConfig()) == "diverged"
    # written back, it has today's header and reads back the same (NaN stays NaN)
    H.write_history(str(path), rows)
    again = read_history(str(path))
    assert open(path).readline().strip() == ",".join(H.COLUMNS)
    assert again[0]["train_loss"] == 0.5 and math.isnan(again[0]["modified_loss_n"])
    path.write_text(",".join(old[:-1]) + "\n")
    with pytest.raises(H.HistoryError, match="is not a history file"):
        read_history(str(path))


def test_the_history_logs_the_finite_n_coefficient_at_each_step(tmp_path):
    """A float64 run logs, beside eq. (8)'s large-n c, Remark 3.7's c(n) at the row's step
    (0 at step 0, between 0 and c after) and E + c(n) ||grad E||_{1,eps}; the large-n
    pair is unchanged."""
    import bea
    from bea._finite_n import correction_coefficient_n

    bea.enable_x64()
    h, beta, rho = 1e-2, 0.9, 0.999
    cfg = T.TrainConfig(model="mlp", train_size=40, test_size=8, physical_batch=40,
                        dtype="float64", max_steps=3, h=h, beta=beta, rho=rho, eps=1e-3)
    T.run(cfg, str(tmp_path / "run"), progress=False, log=lambda s: None)
    rows = read_history(str(tmp_path / "run" / "history.csv"))
    c_large = bea.correction_coefficient(h, beta, rho)
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert rows[0]["correction_coefficient_n"] == 0.0
    assert rows[0]["modified_loss_n"] == rows[0]["train_loss"]
    for r in rows:
        c_n = float(correction_coefficient_n(h, beta, rho, r["step"]))
        assert r["correction_coefficient_n"] == pytest.approx(c_n, rel=1e-14, abs=0)
        assert r["modified_loss_n"] == pytest.approx(
            r["train_loss"] + c_n * r["perturbed_one_norm"], rel=1e-14)
        assert r["correction_coefficient"] == pytest.approx(float(c_large), rel=1e-14)
    # inside rho's memory c(n) is a small fraction of the large-n c, and grows with n
    assert c_large < rows[2]["correction_coefficient_n"] < rows[1]["correction_coefficient_n"] < 0
    assert rows[2]["correction_coefficient_n"] > 0.01 * float(c_large)
