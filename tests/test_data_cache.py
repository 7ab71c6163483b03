"""Cache directory resolution, atomic writes, and verification of cached array bundles."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from newton_lab.data.cache import (
    CACHE_ENV_VAR,
    DataIntegrityError,
    atomic_write,
    cache_dir,
    load_verified_npz,
    save_verified_npz,
)


def test_cache_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "from_env"))
    assert cache_dir() == tmp_path / "from_env"
    assert cache_dir(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv(CACHE_ENV_VAR)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "newton_losses"
    # resolving creates nothing; the directory appears when a cache file is saved
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    save_verified_npz(cache_dir() / "sub" / "x.npz", _arrays())
    assert (tmp_path / "home" / ".cache" / "newton_losses" / "sub" / "x.npz").is_file()


def test_cache_dir_under_a_file_is_not_an_error_to_resolve(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "a_file" / "sub"))
    assert cache_dir() == tmp_path / "a_file" / "sub"
    with pytest.raises(FileNotFoundError):
        load_verified_npz(cache_dir() / "x.npz")
    with pytest.raises(DataIntegrityError, match="cannot access"):
        load_verified_npz(tmp_path / ("x" * 300) / "x.npz")  # ENAMETOOLONG


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as f:
            f.write(b"half-writ")
            raise KeyboardInterrupt  # an interruption mid-write
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"], "temporary file left behind"
    with atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def _arrays():
    rng = np.random.default_rng(0)
    return {
        "a": rng.integers(0, 255, (50, 7), dtype=np.uint8),
        "b": rng.standard_normal(11).astype(np.float32),
    }


@pytest.mark.parametrize("compress", [False, True])
def test_roundtrip_and_meta(tmp_path, compress):
    path = tmp_path / "x.npz"
    save_verified_npz(path, _arrays(), {"dataset": "t", "n": 3}, compress=compress)
    arrays, meta = load_verified_npz(path, {"dataset": "t"})
    for k, v in _arrays().items():
        np.testing.assert_array_equal(arrays[k], v)
        assert arrays[k].dtype == v.dtype
    assert meta == {"dataset": "t", "n": 3}
    with pytest.raises(DataIntegrityError, match="n=3, expected 4"):
        load_verified_npz(path, {"n": 4})


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "x.npz"
    save_verified_npz(path, _arrays())

    def exploding_savez(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", exploding_savez)
    with pytest.raises(KeyboardInterrupt):
        save_verified_npz(path, {"a": np.zeros(3)})
    monkeypatch.undo()
    arrays, _ = load_verified_npz(path)
    np.testing.assert_array_equal(arrays["a"], _arrays()["a"])
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"]


def test_corruption_is_detected(tmp_path):
    path = tmp_path / "x.npz"
    save_verified_npz(path, _arrays())
    blob = bytearray(path.read_bytes())

    # a flipped byte inside array "a"'s data (uncompressed: the data sit verbatim in the file)
    corrupted = bytearray(blob)
    offset = bytes(blob).find(_arrays()["a"].tobytes()[:32])
    assert offset > 0
    corrupted[offset + 5] ^= 0xFF
    path.write_bytes(bytes(corrupted))
    with pytest.raises(DataIntegrityError):
        load_verified_npz(path)

    # truncation
    path.write_bytes(bytes(blob[: len(blob) // 2]))
    with pytest.raises(DataIntegrityError, match="unreadable"):
        load_verified_npz(path)

    # garbage
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(DataIntegrityError):
        load_verified_npz(path)

    # a valid npz without a manifest
    np.savez(path, a=np.zeros(3))
    with pytest.raises(DataIntegrityError, match="no manifest"):
        load_verified_npz(path)

    with pytest.raises(FileNotFoundError):
        load_verified_npz(tmp_path / "missing.npz")


def test_manifest_mismatch_is_detected(tmp_path):
    path = tmp_path / "x.npz"
    arrays = _arrays()
    save_verified_npz(path, arrays)
    with np.load(path) as npz:
        manifest = json.loads(npz["__manifest__"].tobytes())
    manifest["arrays"]["a"]["shape"] = [49, 7]
    np.savez(path, **arrays, __manifest__=np.frombuffer(json.dumps(manifest).encode(), np.uint8))
    with pytest.raises(DataIntegrityError, match="manifest says"):
        load_verified_npz(path)


def test_check_callback_and_reserved_key(tmp_path):
    path = tmp_path / "x.npz"
    save_verified_npz(path, _arrays())

    def check(arrays):
        raise ValueError("labels out of range")

    with pytest.raises(DataIntegrityError, match="labels out of range"):
        load_verified_npz(path, check=check)
    with pytest.raises(ValueError, match="reserved"):
        save_verified_npz(path, {"__manifest__": np.zeros(1)})
    with pytest.raises(TypeError, match="object"):
        save_verified_npz(path, {"o": np.array([object()])})


def _open_fds() -> int | None:
    fd_dir = "/proc/self/fd"
    return len(os.listdir(fd_dir)) if os.path.isdir(fd_dir) else None


@pytest.mark.parametrize("compress", [False, True])
def test_single_byte_corruption_is_loaded_correctly_or_rejected(tmp_path, compress):
    """Every single-byte flip of a small verified file either still loads exactly the stored
    arrays and metadata (a byte the zip format ignores) or raises DataIntegrityError — never
    another exception (zlib.error, NotImplementedError, tokenize.TokenError, ...), never
    different data, and never a leaked file handle."""
    path = tmp_path / "x.npz"
    arrays = _arrays()
    save_verified_npz(path, arrays, {"dataset": "t", "n": 3}, compress=compress)
    good = path.read_bytes()
    fds_before = _open_fds()
    outcomes = {"loaded": 0, "rejected": 0}
    for pattern in (0xA5, 0x01):
        for position in range(len(good)):
            corrupted = bytearray(good)
            corrupted[position] ^= pattern
            path.write_bytes(bytes(corrupted))
            try:
                loaded, meta = load_verified_npz(path, {"dataset": "t"})
            except DataIntegrityError:
                outcomes["rejected"] += 1
                continue
            outcomes["loaded"] += 1
            assert meta == {"dataset": "t", "n": 3}, f"byte {position}"
            assert loaded.keys() == arrays.keys(), f"byte {position}"
            for name, value in arrays.items():
                assert loaded[name].dtype == value.dtype, f"byte {position}"
                np.testing.assert_array_equal(loaded[name], value, err_msg=f"byte {position}")
    assert outcomes["rejected"] > len(good)  # most bytes matter
    if fds_before is not None:
        assert _open_fds() == fds_before, "file handles leaked"


@pytest.mark.parametrize(
    "manifest",
    [
        [1, 2],
        "format",
        {"format": 1, "meta": {}, "arrays": []},
        {"format": 1, "meta": [], "arrays": {}},
        {"format": 1, "meta": {}, "arrays": {"a": {"shape": "50", "dtype": "|u1", "sha256": ""}}},
        {"format": 1, "meta": {}, "arrays": {"a": {"shape": [50, 7], "dtype": "|u1"}}},
        {"format": 1, "meta": {}, "arrays": {"missing": {"shape": [1], "dtype": "|u1",
                                                         "sha256": ""}}},
    ],
)
def test_malformed_manifests_are_rejected(tmp_path, manifest):
    path = tmp_path / "x.npz"
    raw = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    np.savez(path, **_arrays(), __manifest__=raw)
    with pytest.raises(DataIntegrityError):
        load_verified_npz(path)


def test_non_archives_are_rejected_without_leaking_handles(tmp_path):
    path = tmp_path / "x.npz"
    fds_before = _open_fds()
    for content in (b"", b"garbage", b"\x93NUMPY" + bytes(100), b"PK\x03\x04" + bytes(100)):
        path.write_bytes(content)
        with pytest.raises(DataIntegrityError):
            load_verified_npz(path)
    np.save(tmp_path / "plain.npy", np.arange(3))  # a valid .npy is not an .npz
    with pytest.raises(DataIntegrityError, match="not an .npz"):
        load_verified_npz(tmp_path / "plain.npy")
    if fds_before is not None:
        assert _open_fds() == fds_before, "file handles leaked"


def test_any_failure_of_the_check_callback_is_an_integrity_error(tmp_path):
    path = tmp_path / "x.npz"
    save_verified_npz(path, _arrays())

    def check(arrays):
        np.arange(3)[arrays["a"].max()]  # IndexError: what a value check may trip over

    with pytest.raises(DataIntegrityError, match="out of bounds"):
        load_verified_npz(path, check=check)
