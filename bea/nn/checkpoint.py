"""Orbax checkpoints of the training state, so that ``--resume`` continues a killed run.

The state saved is the flat list of array leaves of ``(params, opt_state)``; the
structure comes back from a freshly initialised state of the same configuration, so
nothing but arrays is ever pickled. Orbax writes each step into a temporary directory
and renames it when complete, so a kill during a save leaves the previous checkpoint.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp
from jaxtyping import PyTree

__all__ = ["Checkpointer"]


class Checkpointer:
    """Save / restore a pytree of arrays under ``directory`` at integer steps."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: PyTree) -> None:
        leaves = jax.tree_util.tree_leaves(state)
        self._manager.save(step, args=ocp.args.StandardSave({"leaves": leaves}), force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, like: PyTree) -> PyTree:
        """The state saved at ``step``, with the structure and shardings of ``like``."""
        leaves, treedef = jax.tree_util.tree_flatten(like)
        target = {"leaves": leaves}
        out = self._manager.restore(step, args=ocp.args.StandardRestore(target))
        return jax.tree_util.tree_unflatten(treedef, out["leaves"])

    def close(self) -> None:
        self._manager.close()
