"""bea._precision: importing bea changes no JAX setting; float64 where asked."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bea import _precision as precision


def test_import_changes_no_setting():
    code = "import jax, bea, bea.nn\nprint(jax.config.jax_enable_x64)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True, env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.stdout.strip() == "False"


def test_float64_context_and_conversion():
    with jax.enable_x64(False):
        f32 = jnp.ones(2)
        assert f32.dtype == jnp.float32
        with precision.float64():
            t = precision.to_float64({"a": f32, "n": np.arange(2)}, "data")
            assert t["a"].dtype == jnp.float64 and t["n"].dtype == jnp.int64
        assert jnp.ones(2).dtype == jnp.float32  # restored
    with pytest.raises(ValueError, match=r"data\['z'\] is complex"):
        precision.to_float64({"z": np.ones(2, complex)}, "data")


def test_float32_losses_are_refused():
    with jax.enable_x64(False):
        c = jnp.ones(2)
    precision.check_float64_loss(lambda t: jnp.sum(t**2), jnp.ones(2))
    with pytest.raises(ValueError, match="closes over float32 arrays"):
        precision.check_float64_loss(lambda t: jnp.sum(t * c), jnp.ones(2))
    with pytest.raises(ValueError, match="returns float32"):
        precision.check_float64_loss(lambda t: jnp.sum(t).astype(jnp.float32), jnp.ones(2))
    with pytest.raises(ValueError, match="scalar"):
        precision.check_float64_loss(lambda t: t, jnp.ones(2))
