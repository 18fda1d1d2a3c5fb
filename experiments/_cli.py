"""Shared command-line plumbing: one-line errors with exit status 2, one line and exit
status 130 / 143 on SIGINT / SIGTERM (:func:`interruptible`), size limits checked before
anything is built (:func:`check_size`), float64 and the compilation cache. Files are
written by bea's one atomic writer (bea.io): a signal leaves every file whole."""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import os
import re
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator

_UNSET = object()


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line naming the offending value, exit 2, and
    that reads any negative number (``--eps -1e-3``) as a value, so the check that refuses
    it can name it."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._negative_number_matcher = re.compile(
            r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.I)

    def error(self, message):  # noqa: D401 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)

    def parse_args(self, args=None, namespace=None):
        """As argparse's, and records in ``self.given`` the destinations set on the command
        line (not by their defaults), so that conflicting flags can be refused."""
        ns = super().parse_args(args, namespace)
        # parsed again into a namespace holding a marker where the defaults would go (None
        # for the actions that add to what is there: append, count)
        adds = (argparse._AppendAction, argparse._AppendConstAction, argparse._CountAction)
        probe = argparse.Namespace(**{a.dest: None if isinstance(a, adds) else _UNSET
                                      for a in self._actions if a.dest != argparse.SUPPRESS})
        super().parse_args(args, probe)  # the same arguments: no error the first did not raise
        self.given = {k for k, v in vars(probe).items() if v is not _UNSET and v is not None}
        return ns


def number(text: str) -> float:
    """An argparse type: a float, with the text named when it is not one or overflows
    (``1e400`` would silently become inf)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if math.isinf(x) and "inf" not in text.lower():
        raise argparse.ArgumentTypeError(f"{text!r} is beyond the float range")
    return x


def integer(text: str) -> int:
    """An argparse type: an integer, the text named when it is not one."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def check_out_dir(path: str, files: tuple[str, ...] = ()) -> list[str]:
    """Make sure results can be written to directory ``path`` before computing them,
    creating nothing: raise ValueError (one line) if it is empty, a file, below a file, or
    not writable. Returns those of ``files`` that already exist there (and will be
    replaced)."""
    if not path:
        raise ValueError("--out is empty: give a directory")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--out {path!r} exists and is not a directory")
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ValueError(f"--out {path!r} lies below {probe!r}, which is not a directory")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ValueError(f"--out {path!r} is not writable ({probe}: {e.strerror})") from None
    return [f for f in files if os.path.exists(os.path.join(path, f))]


def fail(prog: str, message: str) -> None:
    sys.stderr.write(f"{prog}: error: {message}\n")
    raise SystemExit(2)


def check_size(what: str, value: float, limit: float, hint: str = "") -> None:
    """Raise ValueError (one line, numbers in 3 significant digits however large) if
    ``value`` exceeds ``limit``: every size a command would build (members, steps, grid
    combinations, resamples, processes) is checked this way before anything is built."""
    if not value <= limit:
        raise ValueError(f"{what} = {short(value)} exceeds the limit of {short(limit)}"
                         + (f"; {hint}" if hint else ""))


def short(x: float) -> str:
    """A number in at most a dozen characters: integers below 10**6 exactly, others in 3
    significant digits (``1e+300``, not 301 digits)."""
    if isinstance(x, int) and abs(x) < 10**6:
        return str(x)
    return f"{x:.3g}"


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so one handler serves both."""

    signum = signal.SIGTERM


def _raise_terminated(signum, frame):
    raise _Terminated()


NOTHING_HALF_WRITTEN = "; every file is written whole (none is half-written)"
_outer: list[str] = []  # the commands inside exit_on_signal, outermost first


@contextlib.contextmanager
def exit_on_signal(prog: str, note: str = NOTHING_HALF_WRITTEN) -> Iterator[None]:
    """Inside the block, SIGINT (Ctrl-C) and SIGTERM end the command with one line on
    stderr, ``PROG: interrupted (SIGINT)`` + ``note``, and exit status 128 + the signal
    (130, 143), instead of a traceback or a silent death. Code that stops more gently (the
    training loop saves a checkpoint) installs its own handlers inside the block and
    restores these; a command run inside another's block leaves the line to the outer
    one. Handlers are only installed in the main thread."""
    if _outer:  # a command run by another (orders runs convergence): the outer one says it
        yield
        return
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
    _outer.append(prog)
    try:
        yield
    except KeyboardInterrupt as e:
        signum = getattr(e, "signum", signal.SIGINT)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        sys.stderr.write(f"{prog}: interrupted ({signal.Signals(signum).name}){note}\n")
        sys.stderr.flush()
        jax = sys.modules.get("jax")
        if jax is not None and jax.distributed.is_initialized():
            os._exit(128 + signum)  # JAX's shutdown would wait for the others at a barrier
        raise SystemExit(128 + signum) from None
    finally:
        _outer.pop()
        if main_thread:
            signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)


def interruptible(prog: str, note: str = NOTHING_HALF_WRITTEN) -> Callable:
    """Decorate a command's ``main`` with :func:`exit_on_signal`."""

    def wrap(main: Callable) -> Callable:
        @functools.wraps(main)
        def run(*args, **kwargs):
            with exit_on_signal(prog, note):
                return main(*args, **kwargs)

        return run

    return wrap


def cache_dir() -> str:
    """Where JAX's persistent compilation cache lives: $BEA_JAX_CACHE, else
    $XDG_CACHE_HOME/bea/jax (~/.cache/bea/jax), never the working directory."""
    if os.environ.get("BEA_JAX_CACHE"):
        return os.environ["BEA_JAX_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bea", "jax")


def enable_compile_cache(max_bytes: int = 2 << 30) -> None:
    """JAX's persistent compilation cache in :func:`cache_dir`, bounded to ``max_bytes``
    (least recently used entries go first): a repeated command loads its programs instead
    of compiling them."""
    import jax

    jax.config.update("jax_compilation_cache_dir", cache_dir())
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    jax.config.update("jax_compilation_cache_max_size", max_bytes)


def numbers(text: str) -> list[float]:
    """An argparse type: comma-separated numbers (``"0.1,0.03"``), each read by
    :func:`number`; at least one."""
    vals = [number(v.strip()) for v in text.split(",") if v.strip()]
    if not vals:
        raise argparse.ArgumentTypeError(f"{text!r} holds no number")
    return vals


def key_values(keys: tuple[str, ...]):
    """An argparse type for ``KEY=V1,V2,...`` with KEY in ``keys``: (KEY, (V1, V2, ...)),
    the values read by :func:`numbers` and distinct."""

    def parse(text: str) -> tuple[str, tuple[float, ...]]:
        key, sep, values = text.partition("=")
        key = key.strip()
        if not sep or key not in keys:
            raise argparse.ArgumentTypeError(f"must be KEY=V1,V2,... with KEY in "
                                             f"{', '.join(keys)}, got {text!r}")
        vals = numbers(values)
        if len(set(vals)) != len(vals):
            raise argparse.ArgumentTypeError(f"values repeat in {text!r}")
        return key, tuple(vals)

    return parse


def save_png(fig, path: str, dpi: int) -> None:
    """A matplotlib figure as PNG through bea's atomic writer (no half-written file,
    unique temporary names for concurrent writers); the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    from bea.io import write_atomic

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    write_atomic(path, buf.getvalue())
