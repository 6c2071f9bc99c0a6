"""Completeness and integrity of a store's parts: status, verify, scan, consolidate, clean up.

    vst store consolidate ROOT [--verify]    # write manifest.json
    vst store verify ROOT [--part ID]       # recompute checksums
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data.store.format import (FORMAT, FORMAT_VERSION, INDEX_FILE, MANIFEST_FILE, PART_MARKER,
                               PARTS_DIR, TMP_PREFIX, StoreCorruptError, StoreError,
                               StoreOpenError, part_name, read_store_meta, sha256_file,
                               write_json_atomic)
from data.store.token_arrays import TokenArrayCorrupt, verify_array


def part_status(root: str | Path, part_id: int | str) -> str:
    """"complete" (marker present), "incomplete" (temp dir, or dir without marker), "missing"."""
    root = Path(root)
    name = part_name(part_id)
    final = root / PARTS_DIR / name
    if (final / PART_MARKER).exists():
        return "complete"
    if final.exists() or any((root / PARTS_DIR).glob(f"{TMP_PREFIX}{name}-*")):
        return "incomplete"
    return "missing"


def read_part_info(root: str | Path, part_id: int | str) -> dict:
    marker = Path(root) / PARTS_DIR / part_name(part_id) / PART_MARKER
    if not marker.exists():
        raise StoreOpenError(f"{marker.parent} is not a complete part (no {PART_MARKER})")
    return json.loads(marker.read_text(encoding="utf-8"))


def verify_part(root: str | Path, part_id: int | str, expected: dict | None = None) -> dict:
    """Recompute a complete part's checksums and counts; raise StoreCorruptError on mismatch.

    ``expected`` (e.g. the part's manifest entry) must also agree with the part's marker.
    Returns the part's info (its part.json).
    """
    root = Path(root)
    name = part_name(part_id)
    directory = root / PARTS_DIR / name
    try:
        info = read_part_info(root, name)
    except (StoreError, json.JSONDecodeError) as err:
        raise StoreCorruptError(f"{name}: {err}") from None
    if expected is not None and expected != info:
        raise StoreCorruptError(f"{name}: part.json differs from the manifest entry")
    index_path = directory / INDEX_FILE
    if not index_path.exists() or sha256_file(index_path) != info["index_sha256"]:
        raise StoreCorruptError(f"{name}: {INDEX_FILE} missing or checksum mismatch")
    meta = read_store_meta(root)
    try:
        verify_array(directory, meta.layout, info["token_array"])
    except TokenArrayCorrupt as err:
        raise StoreCorruptError(f"{name}: {err}") from None
    constants = {"render_config_id": meta.render_config_id, "codec_name": meta.codec_name,
                 "codec_mode": meta.codec_mode, "codec_version": meta.codec_version}
    index = pq.read_table(index_path, columns=["doc_id", "token_count", *constants])
    tokens = int(pc.sum(index["token_count"]).as_py() or 0)
    docs = len(pc.unique(index["doc_id"]))
    if (index.num_rows, tokens, docs) != (info["pages"], info["tokens"], info["docs"]):
        raise StoreCorruptError(f"{name}: index counts (pages, tokens, docs) = "
                                f"{(index.num_rows, tokens, docs)} disagree with part.json")
    for column, value in constants.items():
        if set(pc.unique(index[column].cast(pa.string())).to_pylist()) - {value}:
            raise StoreCorruptError(f"{name}: index column {column} disagrees with store.json")
    return info


def scan_parts(root: str | Path) -> tuple[list[str], list[str]]:
    """Names of complete parts and of incomplete ones (temp dirs, dirs without a marker)."""
    parts_dir = Path(root) / PARTS_DIR
    complete, incomplete = [], []
    for child in sorted(parts_dir.iterdir()) if parts_dir.exists() else []:
        if not child.is_dir():
            continue
        if child.name.startswith(TMP_PREFIX) or not (child / PART_MARKER).exists():
            incomplete.append(child.name)
        else:
            complete.append(child.name)
    return complete, incomplete


def consolidate(root: str | Path, *, verify: bool = False) -> dict:
    """Write ``manifest.json`` from the complete parts (optionally verifying each first).

    Incomplete parts are listed in the manifest under "incomplete" and not counted. Call it
    once all writers are done (e.g. at the end of the conversion job).
    """
    root = Path(root)
    meta = read_store_meta(root)
    complete, incomplete = scan_parts(root)
    parts = {}
    for name in complete:
        parts[name] = verify_part(root, name) if verify else read_part_info(root, name)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": meta.to_json(),
        "parts": parts,
        "incomplete": incomplete,
        "totals": {key: sum(p[key] for p in parts.values()) for key in ("pages", "tokens", "docs")},
    }
    write_json_atomic(root / MANIFEST_FILE, manifest)
    return manifest


def verify_store(root: str | Path) -> dict:
    """Check every part listed in the manifest (without opening the store for reading)."""
    root = Path(root)
    manifest_path = root / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise StoreCorruptError(f"{manifest_path}: unreadable ({err})") from None
    complete, _ = scan_parts(root)
    missing = sorted(set(manifest["parts"]) - set(complete))
    if missing:
        raise StoreCorruptError(f"parts in the manifest but not complete on disk: {missing}")
    for name, entry in sorted(manifest["parts"].items()):
        verify_part(root, name, expected=entry)
    return manifest


def remove_incomplete(root: str | Path) -> list[str]:
    """Delete temp dirs and marker-less part dirs. Only safe when no writer is running."""
    _, incomplete = scan_parts(root)
    for name in incomplete:
        shutil.rmtree(Path(root) / PARTS_DIR / name)
    return incomplete
