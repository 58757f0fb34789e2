"""Atomic writes: content lands whole, nothing is left behind on failure, normal permissions."""

import os
import stat

import pytest

from jaxbn._io import atomic_write_bytes, write_json


def test_atomic_write_replaces_and_uses_the_umask(tmp_path):
    path = tmp_path / "sub" / "out.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir()] == ["out.bin"]


def test_failed_write_leaves_no_temp_file_and_keeps_the_old_content(tmp_path, monkeypatch):
    path = tmp_path / "out.json"
    write_json(path, {"a": 1})

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        write_json(path, {"a": 2})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
