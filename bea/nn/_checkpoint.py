"""Orbax checkpoints of the training state, so that ``--resume`` continues a killed run.

The state saved is the flat list of array leaves of ``(params, opt_state)``; the
structure comes back from a freshly initialised state of the same configuration, so
nothing but arrays is ever pickled. Orbax writes each step into a temporary directory
and renames it when complete, so a kill during a save leaves the previous checkpoint.

Several processes (``bea.distributed``): every process calls :meth:`Checkpointer.save`
and :meth:`Checkpointer.restore` on the same directory (orbax's rule: the save is one
collective operation in which each process writes the shards it holds, and process 0
commits the step; each process restores its own shards), so the directory must lie on a
file system every process sees. The state is replicated, so in practice process 0
writes the data and the others take part in the barriers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable

import jax
import orbax.checkpoint as ocp
from jaxtyping import PyTree

__all__ = ["Checkpointer", "DamagedCheckpoints"]


class DamagedCheckpoints(ValueError):
    """No checkpoint in a directory can be restored; the message names it and why."""


@contextlib.contextmanager
def _quiet(name: str):
    """Python logger ``name`` silenced below CRITICAL inside the block."""
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


def _drop_closed_loop_reports() -> None:
    """Silence exactly the reports a failed orbax restore leaves behind. The restore
    aborts on the first unreadable array while tensorstore still has reads in flight; as
    each completes, its callback finds orbax's asyncio loop closed and Python prints a
    ``RuntimeError: Event loop is closed`` traceback through ``sys.unraisablehook``
    (dozens per damaged checkpoint, while and after the restore fails). Installed once,
    by the first :meth:`Checkpointer.restore_latest`; every other report goes to the
    previous hook."""
    if getattr(sys.unraisablehook, "_bea_closed_loop_filter", False):
        return
    previous = sys.unraisablehook

    def hook(report):
        e = report.exc_value
        if isinstance(e, RuntimeError) and str(e) == "Event loop is closed":
            return
        previous(report)

    hook._bea_closed_loop_filter = True
    sys.unraisablehook = hook


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:160] if text else "") or type(e).__name__


class Checkpointer:
    """Save / restore a pytree of arrays under ``directory`` at integer steps. The
    directory is created by the first save, not before."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.max_to_keep = max_to_keep
        self._manager: ocp.CheckpointManager | None = None

    @property
    def manager(self) -> ocp.CheckpointManager:
        if self._manager is None:
            self._manager = ocp.CheckpointManager(
                self.directory,
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=self.max_to_keep, enable_async_checkpointing=False,
                    create=True),
            )
        return self._manager

    def steps(self) -> list[int]:
        """Committed steps, oldest first (a step's directory is renamed to its number once
        complete)."""
        from bea.nn._rundir import checkpoint_steps

        return checkpoint_steps(self.directory)

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def save(self, step: int, state: PyTree) -> None:
        leaves = jax.tree_util.tree_leaves(state)
        self.manager.save(step, args=ocp.args.StandardSave({"leaves": leaves}), force=True)
        self.manager.wait_until_finished()

    def restore(self, step: int, like: PyTree) -> PyTree:
        """The state saved at ``step``, with the structure and shardings of ``like``."""
        leaves, treedef = jax.tree_util.tree_flatten(like)
        target = {"leaves": leaves}
        out = self.manager.restore(step, args=ocp.args.StandardRestore(target))
        got = out["leaves"]
        for a, b in zip(got, leaves, strict=True):
            if a.shape != b.shape or a.dtype != b.dtype:
                raise ValueError(f"leaf {a.shape} {a.dtype} where {b.shape} {b.dtype} was "
                                 "expected")
        return jax.tree_util.tree_unflatten(treedef, got)

    def restore_latest(
        self, like: PyTree, log: Callable[[str], None], agree: Callable[[bool], bool],
        is_main: bool = True,
    ) -> tuple[int, PyTree] | None:
        """(step, state) of the newest checkpoint that restores, or None if there is none.
        Damaged ones newer than it (unreadable, truncated, of another shape) are said
        through ``log`` and moved aside to ``STEP.damaged`` (orbax ignores them; the run
        saves that step again). ``agree(ok)`` is True when every process restored
        (several processes must take the same branch). DamagedCheckpoints, moving
        nothing, if every checkpoint is damaged."""
        damaged = []
        found = None
        _drop_closed_loop_reports()  # a damaged one is said below, once
        for step in reversed(self.steps()):
            try:
                with _quiet("absl"):  # orbax logs a damaged file before raising: said below
                    state, err = self.restore(step, like), None
            except Exception as e:  # noqa: BLE001 - orbax, tensorstore, json: name it
                state, err = None, e
            if agree(err is None):
                found = step, state
                break
            damaged.append((step, _one_line(err) if err is not None
                            else "another process could not read it"))
        if found is None and damaged:
            raise DamagedCheckpoints(
                f"every checkpoint in {self.directory} is damaged ("
                + "; ".join(f"step {s}: {w}" for s, w in damaged)
                + "): remove that directory to recompute the run from step 0; nothing changed")
        for step, what in damaged:
            log(f"checkpoint step {step} in {self.directory} is damaged ({what}): moved aside "
                f"to {step}.damaged; resuming from step {found[0]}")
            if is_main:
                self._move_aside(step)
        if damaged:
            agree(True)  # every process waits for the moves
            self.close()  # the manager re-reads the steps
        return found

    def _move_aside(self, step: int) -> None:
        src = os.path.join(self.directory, str(step))
        dst, k = f"{src}.damaged", 1
        while os.path.exists(dst):
            k += 1
            dst = f"{src}.damaged{k}"
        os.rename(src, dst)

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None
