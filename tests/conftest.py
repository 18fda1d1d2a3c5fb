"""The test session computes in float64 (numerical verification needs it), turned on here
before any array exists: importing bea itself changes no JAX setting."""

import jax

import bea

bea.enable_x64()
assert jax.config.jax_enable_x64
