"""Cache directory, atomic file writes, and self-verifying ``.npz`` array bundles.

Every cached data set is one ``.npz`` file holding its arrays plus a ``__manifest__`` entry: a
JSON document with a format version, free-form metadata, and the shape, dtype and SHA-256 of
every array. :func:`load_verified_npz` recomputes all of them, so a truncated, corrupted or
stale file is detected instead of silently yielding wrong data. Files are written to a
temporary name in the target directory, flushed, ``fsync``-ed and renamed over the target with
``os.replace`` (atomic on POSIX and Windows), so an interrupted write never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from newton_lab.io import atomic_write

__all__ = [
    "CACHE_ENV_VAR",
    "DataIntegrityError",
    "DataUnavailableError",
    "array_sha256",
    "atomic_write",  # re-exported from newton_lab.io
    "cache_dir",
    "load_verified_npz",
    "save_verified_npz",
]

CACHE_ENV_VAR = "NEWTON_LOSSES_CACHE"
_MANIFEST = "__manifest__"
_FORMAT = 1


class DataUnavailableError(RuntimeError):
    """The data set is neither cached nor obtainable; the message says how to provide it."""


class DataIntegrityError(RuntimeError):
    """A file failed verification (hash, shape, dtype, format): it is never used as data."""


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache directory's path (not created here: writers create it when they save).

    Resolution order: ``path`` if given, else ``$NEWTON_LOSSES_CACHE``, else
    ``~/.cache/newton_losses``. Resolving never touches the file system, so an unusable cache
    location only matters to a loader that actually has to read or write a cache file.
    """
    if path is None:
        path = os.environ.get(CACHE_ENV_VAR) or Path.home() / ".cache" / "newton_losses"
    return Path(path).expanduser()


def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's C-ordered bytes (shape and dtype are checked separately)."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def save_verified_npz(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any] | None = None,
    *,
    compress: bool = False,
) -> None:
    """Write ``arrays`` as ``.npz`` with a manifest of shapes, dtypes and hashes, atomically.

    ``meta`` must be JSON-serializable; :func:`load_verified_npz` returns it. ``compress`` uses
    zip deflate (smaller, slower to write and read).
    """
    if _MANIFEST in arrays:
        raise ValueError(f"arrays must not contain the reserved key {_MANIFEST!r}")
    manifest = {
        "format": _FORMAT,
        "meta": dict(meta or {}),
        "arrays": {
            name: {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": array_sha256(a)}
            for name, a in arrays.items()
        },
    }
    for name, a in arrays.items():
        if a.dtype.hasobject:
            raise TypeError(f"arrays[{name!r}] has dtype {a.dtype}: object arrays are not cached")
    payload = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    payload[_MANIFEST] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
    with atomic_write(path) as f:
        (np.savez_compressed if compress else np.savez)(f, **payload)


def load_verified_npz(
    path: str | os.PathLike,
    expect_meta: Mapping[str, Any] | None = None,
    check: Callable[[dict[str, np.ndarray]], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Load a file written by :func:`save_verified_npz` and verify every array.

    Args:
        path: the ``.npz`` file.
        expect_meta: entries that the stored metadata must equal (e.g. a generator version and
            its parameters): a cache built with other settings is rejected.
        check: optional extra validation of the loaded arrays; raise to reject.

    Returns:
        ``(arrays, meta)``.

    Raises:
        FileNotFoundError: no file at ``path``.
        DataIntegrityError: anything else that goes wrong — an inaccessible, truncated or
            corrupted file (whatever exception the zip, zlib, numpy or JSON layers raise for it,
            chained as the cause), a missing or malformed manifest, mismatching metadata, shape,
            dtype or SHA-256, or ``check`` raised.
    """
    path = Path(path)
    try:
        exists = path.is_file()
    except OSError as exc:  # e.g. a name too long or a directory without permission
        raise DataIntegrityError(f"{path}: cannot access the cache file ({exc})") from exc
    if not exists:
        raise FileNotFoundError(path)
    try:
        # An explicitly opened file is closed on every path; np.load(path) leaks its handle
        # when a file that starts like a zip archive then fails to open as one.
        with open(path, "rb") as f:
            npz = np.load(f, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise DataIntegrityError(f"{path}: not an .npz archive")
            with npz:
                if _MANIFEST not in npz.files:
                    raise DataIntegrityError(f"{path}: no manifest (not written by this package?)")
                manifest = _parse_manifest(path, npz[_MANIFEST])
                arrays = {name: npz[name] for name in manifest["arrays"]}
    except DataIntegrityError:
        raise
    except Exception as exc:  # a corrupted file can fail in any layer (zip, zlib, numpy, JSON)
        raise DataIntegrityError(
            f"{path}: unreadable cache file ({type(exc).__name__}: {exc})"
        ) from exc
    meta = manifest["meta"]
    for key, value in (expect_meta or {}).items():
        if meta.get(key) != value:
            raise DataIntegrityError(
                f"{path}: built with {key}={meta.get(key)!r}, expected {value!r}"
            )
    for name, spec in manifest["arrays"].items():
        a = arrays[name]
        if list(a.shape) != spec["shape"] or a.dtype.str != spec["dtype"]:
            raise DataIntegrityError(
                f"{path}: array {name!r} is {a.dtype.str}{list(a.shape)}, manifest says "
                f"{spec['dtype']}{spec['shape']}"
            )
        if array_sha256(a) != spec["sha256"]:
            raise DataIntegrityError(f"{path}: array {name!r} fails its SHA-256 check")
    if check is not None:
        try:
            check(arrays)
        except Exception as exc:
            raise DataIntegrityError(f"{path}: {exc}") from exc
    return arrays, meta


def _parse_manifest(path: Path, raw: np.ndarray) -> dict[str, Any]:
    """The manifest as a dict, every field type-checked; DataIntegrityError otherwise."""
    manifest = json.loads(raw.tobytes().decode())
    if not isinstance(manifest, dict):
        raise DataIntegrityError(
            f"{path}: manifest is a JSON {type(manifest).__name__}, not an object"
        )
    if manifest.get("format") != _FORMAT:
        raise DataIntegrityError(f"{path}: cache format {manifest.get('format')!r} != {_FORMAT}")
    meta, specs = manifest.get("meta", {}), manifest.get("arrays")
    if not isinstance(meta, dict) or not isinstance(specs, dict):
        raise DataIntegrityError(f"{path}: manifest 'meta' and 'arrays' must be JSON objects")
    for name, spec in specs.items():
        if not (
            name != _MANIFEST
            and isinstance(spec, dict)
            and isinstance(spec.get("shape"), list)
            and all(type(d) is int and d >= 0 for d in spec["shape"])
            and isinstance(spec.get("dtype"), str)
            and isinstance(spec.get("sha256"), str)
        ):
            raise DataIntegrityError(f"{path}: malformed manifest entry for array {name!r}")
    return {"meta": meta, "arrays": specs}
