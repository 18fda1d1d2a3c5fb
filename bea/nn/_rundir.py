"""A run directory's consistency before ``--resume``, and the lock of its one writer.

Before a run writes anything, :func:`inspect` reads what ``OUT`` already holds and
refuses, in one line naming the file, every state from which continuing would lose or
mix results:

* a run in ``OUT`` without ``--resume``, or the other kind of run (a sweep where a single
  run is asked for, or the reverse);
* run files without the run's configuration (``config.json`` / ``sweep.json`` missing:
  continuing would pair the old checkpoint with whatever flags are given now);
* a configuration, member list, history or per-member JSON that differs from the command
  or cannot be read (damaged, truncated, hand-edited);
* a history shorter than the newest checkpoint of a member that had not stopped (rows
  that were lost: the checkpoint cannot regenerate them).

What it allows it reports (an empty ``OUT`` with ``--resume`` starts fresh; history
without a checkpoint is recomputed from step 0). Damaged checkpoints are found when the
run restores them (:func:`bea.nn.train.run` falls back to the previous intact one).

:class:`RunLock` is the lock a writer holds on ``OUT/train.lock`` (``fcntl.flock``: the
kernel releases it when the process dies, so a lock left by a killed run is taken over,
saying whose it was; a second live writer is refused).
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
from collections.abc import Callable, Sequence

from bea.nn import _run_files as hist

__all__ = ["LOCK_NAME", "RunDirError", "Plan", "checkpoint_steps", "inspect", "RunLock"]

LOCK_NAME = "train.lock"
_STOPPED = ("stop_loss", "diverged")


class RunDirError(ValueError):
    """``OUT`` holds something a run cannot continue or must not overwrite; the message
    names the file and the inconsistency."""


@dataclasses.dataclass
class Plan:
    """What :func:`inspect` found: ``notes`` to report before the run starts."""

    fresh: bool
    notes: list[str] = dataclasses.field(default_factory=list)


def checkpoint_steps(directory: str) -> list[int]:
    """The committed checkpoint steps in an orbax directory, oldest first (orbax renames a
    step's temporary directory to the bare step number once it is complete)."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(n) for n in os.listdir(directory)
                  if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def _run_entries(out: str, specs: Sequence[dict]) -> list[str]:
    """The entries of ``out`` that belong to a run (ours or another's)."""
    names = set(os.listdir(out))
    found = [n for n in ("sweep.json", "config.json", "history.csv", "checkpoints")
             if n in names]
    found += sorted(n for n in names if n.startswith("checkpoints-chunk"))
    tops = {s["name"].split("/")[0] for s in specs if s["name"]}
    found += sorted(n + "/" for n in names & tops)
    return found


def inspect(out: str, *, several: bool, config: dict, specs: Sequence[dict],
            groups: Sequence[tuple[list[int], str]], dirs: Sequence[str], resume: bool,
            resumable: Sequence[str], defaults: dict, legacy: dict | None = None) -> Plan:
    """Check that the run ``config`` (members ``specs`` in ``dirs``, vmapped in
    ``groups`` of (member indices, checkpoint directory)) may write into ``out``; read
    only. Raises RunDirError naming the file for everything the module docstring lists.
    ``legacy``: for some keys, the value an older run file records for the same setting
    (accepted as equal)."""
    root_name = "sweep.json" if several else "config.json"
    root = os.path.join(out, root_name)
    if not os.path.isdir(out):
        if os.path.exists(out):
            raise RunDirError(f"--out {out} exists and is not a directory")
        return Plan(True, [f"--resume: {out} does not exist yet; starting a fresh run"]
                    if resume else [])
    present = _run_entries(out, specs)
    if not present:
        return Plan(True, [f"--resume: {out} holds no run yet; starting a fresh run"]
                    if resume else [])
    if not resume:
        raise RunDirError(f"{out} already holds a run ({', '.join(present)}); pass --resume "
                          "to continue it or choose another --out")
    other = "config.json" if several else "sweep.json"
    if not os.path.exists(root) and os.path.exists(os.path.join(out, other)):
        kinds = ("a single run", "a sweep or seeds") if several else ("a sweep or seeds",
                                                                      "a single run")
        raise RunDirError(f"{out} holds {kinds[0]} ({other}), but the command asks for "
                          f"{kinds[1]}; nothing changed")
    if not os.path.exists(root):
        raise RunDirError(f"--resume: {root} is missing ({out} holds {', '.join(present)}): "
                          "the run's configuration is unknown, so it cannot be continued; "
                          "nothing changed")
    saved = _config_of(root)
    for key, value in config.items():
        old = saved.get(key, defaults[key])
        same = old == value or (legacy is not None and key in legacy and old == legacy[key])
        if key not in resumable and not same:
            raise RunDirError(f"--resume with {key}={value!r} but the run in {out} has "
                              f"{key}={old!r} ({root}); nothing changed")
    if several:
        names = hist.read_json(root).get("members")
        want = [s["name"] for s in specs]
        if names != want:
            raise RunDirError(f"{root} lists members {names!r}, not the command's {want!r}; "
                              "nothing changed")
    notes = []
    for members, ckpt in groups:
        if os.path.exists(ckpt) and not os.path.isdir(ckpt):
            raise RunDirError(f"{ckpt} is not a directory of checkpoints; nothing changed")
        steps = checkpoint_steps(ckpt)
        latest = steps[-1] if steps else None
        for i in members:
            notes += _check_member(dirs[i], latest, ckpt, several)
    return Plan(False, notes)


def _config_of(path: str) -> dict:
    cfg = hist.read_json(path).get("config")
    if not isinstance(cfg, dict):
        raise RunDirError(f"{path} has no 'config' object: not a run file; nothing changed")
    return cfg


def _check_member(d: str, latest: int | None, ckpt: str, several: bool) -> list[str]:
    path = os.path.join(d, "history.csv")
    rows = hist.read_history(path) if os.path.exists(path) else []
    summary = os.path.join(d, "config.json")
    member = hist.read_json(summary) if os.path.exists(summary) else None
    if member is not None and several:  # a member's own summary (a single run's is the root)
        _config_of(summary)
    if latest is None:
        return [f"no checkpoint in {ckpt} yet: the {len(rows)} row(s) of {path} are "
                "recomputed from step 0"] if rows else []
    if len(rows) >= latest:
        return []
    stopped = (member is not None and member.get("status") in _STOPPED
               and member.get("rows") == len(rows))
    if stopped:  # it stopped before the checkpoint; its history is complete
        return []
    have = f"ends at step {rows[-1]['step']}" if rows else "has no rows"
    if not os.path.exists(path):
        have = "is missing"
    raise RunDirError(f"--resume: {path} {have} but the checkpoint in {ckpt} is at step "
                      f"{latest} and the run had not stopped: history rows are lost, so it "
                      "cannot be continued; nothing changed")


class RunLock:
    """``with RunLock(out, log):`` holds ``out/train.lock`` for this process, or raises
    RunDirError (one line) naming the live writer that holds it. A lock file left by a
    process that no longer runs (killed, crashed: the kernel dropped its lock) is taken
    over, saying so through ``log``. The file holds the holder's pid and host; it is
    removed on exit."""

    def __init__(self, out: str, log: Callable[[str], None] = print):
        self.out = out
        self.path = os.path.join(out, LOCK_NAME)
        self.log = log
        self.fd: int | None = None

    @staticmethod
    def holder(path: str) -> str:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read().strip()
        except OSError:
            return ""
        return text

    @classmethod
    def check(cls, out: str) -> None:
        """Read-only probe: RunDirError if a live process holds ``out``'s lock."""
        path = os.path.join(out, LOCK_NAME)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirError(cls._busy(out, path)) from None
        finally:
            os.close(fd)

    @classmethod
    def _busy(cls, out: str, path: str) -> str:
        who = cls.holder(path) or "another process"
        return (f"{out} is being written by another training ({who}, lock {path}); wait for "
                "it to finish or stop it first")

    def __enter__(self) -> RunLock:
        os.makedirs(self.out, exist_ok=True)
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirError(self._busy(self.out, self.path)) from None
            try:  # the file we locked may have been removed by its last holder meanwhile
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise RunDirError(f"could not take the lock {self.path}")
        old = os.read(fd, 4096).decode(errors="replace").strip()
        me = f"pid {os.getpid()} on {os.uname().nodename}"
        if old and old != me:
            self.log(f"took over the lock {self.path} of {old}, which no longer runs")
        os.ftruncate(fd, 0)
        os.pwrite(fd, (me + "\n").encode(), 0)
        os.fsync(fd)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None
