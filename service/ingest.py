"""Items uploaded through the API: stored, embedded, searchable at once, then published.

An upload is written under ``upload_dir`` (named by its sha256, so the same bytes are
stored once), embedded, and committed to the catalog with its vector in one transaction.
Its vector also goes into ``service.fresh.FreshVectors``, a small exact index that every search
consults beside the published version, so the item is found by the very next query.
A publisher task then folds the catalog's vectors into a new index version (debounced:
one version for a burst of uploads); when the service swaps that version in, the items
it holds leave the fresh index.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from index.catalog import NewItem
from service.state import Resources

log = logging.getLogger(__name__)

SUFFIXES = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


def store_upload(upload_dir: Path, data: bytes, image: Image.Image) -> tuple[Path, str]:
    """Write the bytes once under their hash (atomically); returns (path, sha256)."""
    digest = hashlib.sha256(data).hexdigest()
    suffix = SUFFIXES.get(image.format or _format_of(data) or "", ".img")
    path = upload_dir / digest[:2] / f"{digest}{suffix}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return path.resolve(), digest


def _format_of(data: bytes) -> str | None:
    """The image format the bytes' header names (the decoded image may no longer know it)."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            return probe.format
    except Exception:  # Pillow raises many kinds; an upload that got this far decoded once already
        return None


def add_item(res: Resources, data: bytes, image: Image.Image, vector: np.ndarray,
             metadata: dict[str, Any]) -> tuple[int, bool]:
    """Store, catalog and make searchable one uploaded image; returns (id, whether it is new, or back
    after a delete). The same bytes uploaded at once by several callers make one item: one of them
    creates it, the others update it (``Catalog.add_upload``)."""
    path, digest = store_upload(res.upload_dir, data, image)
    item_id, new = res.catalog.add_upload(res.settings.collection, res.encoder.fingerprint,
                                          NewItem(str(path), digest, metadata), vector)
    res.fresh.add(item_id, vector)
    res.unpublished.set()
    return item_id, new
