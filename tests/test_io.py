"""bea.io: the one atomic writer (unique temporary names, umask permissions, strict JSON)."""

import json
import os
import threading

import numpy as np
import pytest

from bea import io as _io


def test_write_json_is_strict_and_readable(tmp_path):
    p = tmp_path / "sub" / "r.json"
    _io.write_json(str(p), {"a": float("nan"), "b": np.float64(2.5), "c": (1, np.int64(2)),
                            "d": np.array([1.0, np.inf])})
    assert json.loads(p.read_text()) == {"a": None, "b": 2.5, "c": [1, 2], "d": [1.0, None]}
    assert _io.read_json(str(p))["b"] == 2.5
    p.write_text("{broken")
    with pytest.raises(ValueError, match="r.json is not valid JSON"):
        _io.read_json(str(p))


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        _io.write_atomic(str(tmp_path / "f.txt"), "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644


def test_concurrent_writers_never_tear_a_file(tmp_path):
    """Eight threads rewrite one file 50 times each with distinct contents: every read sees
    one whole version, and no temporary file is left behind."""
    path = str(tmp_path / "shared.txt")
    texts = [str(i) * 100_000 for i in range(8)]
    seen = set()

    def writer(t):
        for _ in range(50):
            _io.write_atomic(path, t)

    def reader():
        for _ in range(200):
            if os.path.exists(path):
                seen.add(open(path).read())

    threads = [threading.Thread(target=writer, args=(t,)) for t in texts]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen <= set(texts) and open(path).read() in texts
    assert os.listdir(tmp_path) == ["shared.txt"]
