"""Flat token arrays on disk (zarr v3 or .npy memmap), written in chunks with checksums.

A token array's leading axis holds "rows": pages (shape ``[pages, n, D]``, fixed-n codecs) or
tokens (shape ``[tokens, D]``, variable-n codecs). Rows are written in order; every
``chunk_rows`` rows form a chunk whose sha256 (of its C-order little-endian bytes) is recorded,
as is the sha256 of all the bytes. The same hashes are recomputed by ``verify_array`` whatever
the layout, so a zarr chunk and a byte range of a .npy file are checked the same way.

bfloat16 has no numpy dtype here: it is stored as its raw uint16 bits (the store records the
logical dtype) and converted with ``bf16_bits_to_f32`` / ``f32_to_bf16_bits``.
"""

from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from data.errors import BadStore

LAYOUTS = ("zarr", "npy")
DTYPES = ("float16", "bfloat16")
ZARR_NAME = "tokens.zarr"
NPY_NAME = "tokens.npy"
# A fixed-size .npy header lets us write rows first and fill in the final shape at the end.
_NPY_HEADER_BYTES = 256
_NPY_MAGIC = b"\x93NUMPY\x01\x00"


class TokenArrayCorrupt(BadStore):
    """A token array whose bytes or shape disagree with its recorded checksums."""


def storage_dtype(dtype: str) -> np.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return np.dtype("<f2") if dtype == "float16" else np.dtype("<u2")


def f32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float values to bfloat16 (nearest, ties to even); returns the uint16 bit patterns."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((bits >> 16) & 1) + np.uint32(0x7FFF)
    return ((bits + rounding) >> 16).astype(np.uint16)


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_float32(stored: np.ndarray, dtype: str) -> np.ndarray:
    """Stored rows (float16, or bfloat16 bits) as float32."""
    if dtype == "bfloat16":
        return bf16_bits_to_f32(stored)
    return np.asarray(stored, dtype=np.float32)


def to_storage(tokens: Any, dtype: str) -> np.ndarray:
    """Tokens (numpy array or torch tensor) in the store's on-disk dtype; rejects non-finite.

    For dtype bfloat16 a uint16 numpy array is taken as raw bfloat16 bits and a torch
    bfloat16 tensor is stored bit for bit; float inputs are rounded.
    """
    if hasattr(tokens, "detach"):  # a torch tensor; torch is imported by whoever made it
        tokens = tokens.detach().cpu()
        if str(tokens.dtype) == "torch.bfloat16" and dtype == "bfloat16":
            import torch

            tokens = tokens.contiguous().view(torch.int16).numpy().view(np.uint16)
        else:
            tokens = tokens.float().numpy()
    array = np.asarray(tokens)
    if dtype == "bfloat16" and array.dtype == np.uint16:
        if not np.isfinite(bf16_bits_to_f32(array)).all():
            raise ValueError("tokens contain NaN or inf")
        return np.ascontiguousarray(array, dtype="<u2")
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"tokens must be floating point, got {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError("tokens contain NaN or inf")
    if dtype == "bfloat16":
        return f32_to_bf16_bits(array)
    with np.errstate(over="ignore"):  # overflow is reported just below, with advice
        stored = array.astype("<f2")
    if not np.isfinite(stored).all():
        raise ValueError("tokens overflow float16 (|x| > 65504); write the store as bfloat16")
    return np.ascontiguousarray(stored)


class TokenArrayWriter:
    """Appends rows to a new token array in ``directory``; call ``close()`` for the checksums."""

    def __init__(self, directory: Path, layout: str, row_shape: tuple[int, ...], dtype: str,
                 chunk_rows: int) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be positive")
        self.layout = layout
        self.row_shape = tuple(row_shape)
        self.dtype = storage_dtype(dtype)
        self.chunk_rows = chunk_rows
        self.rows = 0
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._total_hash = hashlib.sha256()
        self._chunk_hashes: list[str] = []
        if layout == "zarr":
            import zarr

            self._zarr = zarr.create_array(
                store=str(directory / ZARR_NAME), shape=(0, *self.row_shape),
                chunks=(chunk_rows, *self.row_shape), dtype=self.dtype, fill_value=0)
            self._zarr.attrs["logical_dtype"] = dtype
        else:
            self._path = directory / NPY_NAME
            self._file = self._path.open("wb")
            self._file.write(b"\0" * _NPY_HEADER_BYTES)  # replaced by the real header at close

    def append(self, rows: np.ndarray) -> None:
        if rows.shape[1:] != self.row_shape or rows.dtype != self.dtype:
            raise ValueError(f"rows {rows.shape} {rows.dtype} do not match "
                             f"{self.row_shape} {self.dtype}")
        self._buffer.append(np.ascontiguousarray(rows))
        self._buffered += len(rows)
        if self._buffered >= self.chunk_rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._buffer:
            return
        pending = np.concatenate(self._buffer)
        whole = len(pending) if final else (len(pending) // self.chunk_rows) * self.chunk_rows
        self._write(pending[:whole])
        rest = pending[whole:]
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)

    def _write(self, rows: np.ndarray) -> None:
        """Write rows starting at a chunk boundary; every chunk but the last is full."""
        for start in range(0, len(rows), self.chunk_rows):
            chunk = rows[start:start + self.chunk_rows]
            self._chunk_hashes.append(hashlib.sha256(chunk.tobytes()).hexdigest())
            self._total_hash.update(chunk.tobytes())
        if self.layout == "zarr":
            self._zarr.resize((self.rows + len(rows), *self.row_shape))
            self._zarr[self.rows:self.rows + len(rows)] = rows
        else:
            self._file.write(rows.tobytes())
        self.rows += len(rows)

    def close(self) -> dict:
        self._flush(final=True)
        if self.layout == "npy":
            self._file.seek(0)
            self._file.write(_npy_header(self.dtype, (self.rows, *self.row_shape)))
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        return {"rows": self.rows, "row_shape": list(self.row_shape),
                "chunk_rows": self.chunk_rows, "sha256": self._total_hash.hexdigest(),
                "chunk_sha256": self._chunk_hashes}

    def abort(self) -> None:
        if self.layout == "npy" and not self._file.closed:
            self._file.close()


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version-1.0 .npy header padded to exactly _NPY_HEADER_BYTES."""
    described = {"descr": dtype.str, "fortran_order": False, "shape": tuple(shape)}
    body = repr(described).encode("latin1")
    room = _NPY_HEADER_BYTES - len(_NPY_MAGIC) - 2
    if len(body) + 1 > room:
        raise ValueError(f"shape {shape} too large for the fixed .npy header")
    body = body + b" " * (room - len(body) - 1) + b"\n"
    return _NPY_MAGIC + room.to_bytes(2, "little") + body


def open_array(directory: Path, layout: str) -> Any:
    """Read-only token array: a zarr array or a numpy memmap; both slice to numpy arrays."""
    if layout == "zarr":
        import zarr

        return zarr.open_array(str(directory / ZARR_NAME), mode="r")
    path = directory / NPY_NAME
    with path.open("rb") as fh:
        header = fh.read(_NPY_HEADER_BYTES)
    try:
        shape = ast.literal_eval(header[10:].decode("latin1").strip())["shape"]
    except (ValueError, SyntaxError, KeyError) as err:
        raise TokenArrayCorrupt(f"{path}: unreadable .npy header ({err})") from None
    if shape[0] == 0:  # numpy cannot memory-map zero bytes
        return np.load(path)
    return np.load(path, mmap_mode="r")


def verify_array(directory: Path, layout: str, recorded: dict) -> None:
    """Recompute shape, per-chunk and total checksums; raise TokenArrayCorrupt naming the chunk."""
    where = directory / (ZARR_NAME if layout == "zarr" else NPY_NAME)
    try:
        array = open_array(directory, layout)
    except TokenArrayCorrupt:
        raise
    except Exception as err:
        raise TokenArrayCorrupt(f"{where}: cannot open ({type(err).__name__}: {err})") from None
    expected_shape = (recorded["rows"], *recorded["row_shape"])
    if tuple(array.shape) != expected_shape:
        raise TokenArrayCorrupt(f"{where}: shape {tuple(array.shape)} != recorded {expected_shape}")
    if layout == "npy":
        expected_size = _NPY_HEADER_BYTES + array.nbytes
        if where.stat().st_size != expected_size:
            raise TokenArrayCorrupt(f"{where}: {where.stat().st_size} bytes, "
                                    f"expected {expected_size}")
    chunk_rows = recorded["chunk_rows"]
    total = hashlib.sha256()
    for index, expected in enumerate(recorded["chunk_sha256"]):
        start = index * chunk_rows
        stop = min(start + chunk_rows, recorded["rows"])
        try:
            data = np.ascontiguousarray(array[start:stop]).tobytes()
        except Exception as err:  # a zarr chunk that no longer decompresses
            raise TokenArrayCorrupt(f"{where}: chunk {index} (rows {start}..{stop - 1}) "
                                    f"unreadable: {type(err).__name__}: {err}") from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise TokenArrayCorrupt(f"{where}: chunk {index} (rows {start}..{stop - 1}) "
                                    "checksum mismatch")
        total.update(data)
    if total.hexdigest() != recorded["sha256"]:
        raise TokenArrayCorrupt(f"{where}: total checksum mismatch")
