"""The store layer: visual tokens after the codec, written in parts and read as windows.

    from data.store import Store, StoreMeta, StoreWriter, consolidate, WindowLoader
    vst store info ROOT

Modules, bottom up: ``token_arrays`` (flat zarr / .npy arrays, checksums, bfloat16 bits),
``format`` (layout, ``StoreMeta``, ``PageRecord``, errors, ``create_store``), ``writer``
(``StoreWriter``, one part), ``parts`` (status, verify, consolidate), ``reader``
(``Store``), ``windows`` (``WindowLoader``). Each imports only those before it.
"""

from data.store.format import (FORMAT, FORMAT_VERSION, INDEX_FILE, MANIFEST_FILE, PART_MARKER,
                               PARTS_DIR, STORE_META_FILE, PageRecord, PartExistsError,
                               StoreCorruptError, StoreError, StoreMeta, StoreOpenError,
                               create_store, part_name, read_store_meta)
from data.store.parts import (consolidate, part_status, read_part_info, remove_incomplete,
                              scan_parts, verify_part, verify_store)
from data.store.reader import DEFAULT_CACHE_BYTES, Store, StoredDocument
from data.store.token_arrays import (LAYOUTS, bf16_bits_to_f32, f32_to_bf16_bits, to_float32,
                                     to_storage)
from data.store.windows import (DEFAULT_SHUFFLE_BUFFER, Window, WindowLoader, block_shuffle,
                                page_row_col, plan_windows)
from data.store.writer import StoreWriter

__all__ = [
    "DEFAULT_CACHE_BYTES", "DEFAULT_SHUFFLE_BUFFER", "FORMAT", "FORMAT_VERSION", "INDEX_FILE",
    "LAYOUTS", "MANIFEST_FILE", "PART_MARKER", "PARTS_DIR", "STORE_META_FILE", "PageRecord",
    "PartExistsError", "Store", "StoreCorruptError", "StoreError", "StoreMeta", "StoreOpenError",
    "StoreWriter", "StoredDocument", "Window", "WindowLoader", "bf16_bits_to_f32", "block_shuffle",
    "consolidate", "create_store", "f32_to_bf16_bits", "page_row_col", "part_name",
    "part_status", "plan_windows", "read_part_info", "read_store_meta", "remove_incomplete",
    "scan_parts", "to_float32", "to_storage", "verify_part", "verify_store",
]
