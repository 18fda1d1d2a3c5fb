import jax

import bea  # noqa: F401  (float64 on before any array exists)

assert jax.config.jax_enable_x64
