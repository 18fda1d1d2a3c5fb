import bea  # noqa: F401  (float64 on before any array exists)
import jax

assert jax.config.jax_enable_x64
