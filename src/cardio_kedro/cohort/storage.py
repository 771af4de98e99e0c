"""Cohorts on object storage: ``cohort_dir`` (and ``images_dir``) as fsspec URLs (``s3://``, ``gs://``, ``memory://``).

A local path keeps the local code paths (``os`` and OpenCV on files). A URL goes through fsspec, as
kedro-datasets does (the URL's protocol, ``fsspec.filesystem``), with the storage options
of the catalog's ``credentials: cohort`` entry (``conf/local/credentials.yml``; for S3 ``key``,
``secret`` and, for a non-AWS store, ``client_kwargs: {endpoint_url: ...}``).

For a remote cohort, listing the folder gives every object's size and modification time in a
few requests, so the file check needs no request per image; decoding then reads each object once,
on every core, checks its header in memory before decoding (a truncated or non-image object
becomes a data-quality entry, as a bad local file does), and keeps only the decoded pixels: the
pixel cache stays local and memory-mapped, and the cohort is never held in RAM.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from functools import partial
from typing import Any

import fsspec
from fsspec.core import split_protocol

from cardio_kedro.cohort.imaging import (
    ImageError,
    check_image_bytes,
    decode_bytes,
    decode_dicom,
    is_dicom_bytes,
    resize_gray,
    try_load_gray,
)

LOCAL_PROTOCOLS = ("file", "local")


def _protocol(url: str) -> str:
    """The fsspec protocol of ``url``: ``s3`` for ``s3://b/k``, ``file`` for a plain path (``C:\\x`` too)."""
    return split_protocol(str(url))[0] or "file"


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL of a non-local fsspec filesystem."""
    return _protocol(path) not in LOCAL_PROTOCOLS


def filesystem(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of ``url`` (with ``storage_options``) and the path inside it."""
    fs = fsspec.filesystem(_protocol(url), **(storage_options or {}))
    return fs, fs._strip_protocol(str(url))


def join(url: str, *parts: str) -> str:
    """``url`` with ``parts`` appended, with ``/`` whatever the protocol."""
    return "/".join([str(url).rstrip("/"), *(p.strip("/") for p in parts)])


def _mtime_ns(info: dict) -> int:
    """An object's modification time in ns from an fsspec ``info`` (S3 ``LastModified``, local ``mtime``...)."""
    for key in ("LastModified", "mtime", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return int(value.timestamp() * 1e9)
        if isinstance(value, int | float):
            return int(value * 1e9)
        if isinstance(value, str) and value:
            return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1e9)
    return 0


def list_files(url: str, storage_options: dict[str, Any] | None = None) -> Iterator[tuple[str, int, int]]:
    """``(url, size, mtime_ns)`` of every object below ``url``, in sorted order, hidden names skipped."""
    fs, root = filesystem(url, storage_options)
    found = fs.find(root, detail=True)
    for path in sorted(found):
        info = found[path]
        name = path.rsplit("/", 1)[-1]
        if info.get("type", "file") != "file" or name.startswith("."):
            continue
        yield fs.unstrip_protocol(path), int(info.get("size") or 0), _mtime_ns(info)


def exists(url: str, storage_options: dict[str, Any] | None = None) -> bool:
    fs, path = filesystem(url, storage_options)
    return fs.exists(path)


def read_bytes(url: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """The whole object at ``url`` in one read."""
    fs, path = filesystem(url, storage_options)
    return fs.cat_file(path)


def try_load_gray_url(
    url: str, size: int, storage_options: dict[str, Any] | None = None
) -> tuple[Any, tuple[int, int], ImageError | None]:
    """``imaging.try_load_gray`` for an object in a store: one read, the header checked, then decoded."""
    try:
        data = read_bytes(url, storage_options)
        if is_dicom_bytes(data):
            pixels = decode_dicom(data).pixels
            return resize_gray(pixels, size), pixels.shape, None
        return decode_bytes(data, size), _source_shape(data), None
    except ImageError as exc:
        return None, (0, 0), ImageError(exc.reason, f"{url}: {exc.detail}")
    except FileNotFoundError:
        return None, (0, 0), ImageError("missing", url)
    except Exception as exc:  # noqa: BLE001 - any store or decoder failure is a data-quality entry
        return None, (0, 0), ImageError("corrupt", f"{url}: {exc}")


def image_loader(paths: list[str], size: int, storage_options: dict[str, Any] | None = None):
    """The per-file decoder for ``paths`` (picklable for worker processes): ``imaging.try_load_gray`` for
    local files, ``try_load_gray_url`` with ``storage_options`` for objects of a store."""
    if paths and is_remote(str(paths[0])):
        return partial(try_load_gray_url, size=size, storage_options=storage_options)
    return partial(try_load_gray, size=size)


def _source_shape(data: bytes) -> tuple[int, int]:
    """``(height, width)`` of encoded PNG/JPEG ``data`` from its header."""
    width, height = check_image_bytes(data)
    return height, width
