"""An item's image file, opened only where it may be: under the root it was indexed from, or in the upload
folder, never through a symlink that leads out of them, and typed by its bytes, not by its name.

The file is opened first and its real path is read from the open descriptor (``/proc/self/fd``), so a
symlink swapped in between a check and the open cannot lead the read elsewhere.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image

from index.catalog import UPLOAD, Item

CHUNK = 256 * 1024


class NotServable(Exception):
    """The item's file is gone, outside its root, or not an image."""


@dataclass
class ItemFile:
    file: BinaryIO
    size: int
    media_type: str

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes, then the file closed (also when the reader stops early)."""
        try:
            while data := self.file.read(CHUNK):
                yield data
        finally:
            self.file.close()


def allowed_root(item: Item, upload_dir: Path) -> Path | None:
    """The folder ``item``'s file must resolve under; None for rows from before roots were kept."""
    if item.owner == UPLOAD:
        return upload_dir.resolve()
    return Path(item.root) if item.root else None


def real_path(fd: int, opened: Path) -> Path:
    """Where the open file really is (Linux: the descriptor's link; elsewhere the path resolved now)."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return opened.resolve()


def open_checked(item: Item, path: Path, upload_dir: Path) -> BinaryIO:
    """``path`` (the item's file, or the shard that holds it) opened for reading if it lies where the
    item may be served from and is a regular file; else NotServable."""
    if not path.is_absolute():
        raise NotServable("not an absolute path")
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise NotServable(f"cannot open it: {exc.strerror}") from None
    try:
        real = real_path(f.fileno(), path)
        root = allowed_root(item, upload_dir)
        if root is None:  # catalogued before roots were kept: only a path without any symlink in it
            if real != Path(os.path.abspath(path)):
                raise NotServable("it is reached through a symlink")
        elif not real.is_relative_to(root):
            raise NotServable(f"it resolves outside {root}")
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise NotServable("not a regular file")
        return f
    except BaseException:
        f.close()
        raise


def image_type(head: BinaryIO) -> str:
    """The MIME type of the image whose bytes ``head`` reads (from its header), or NotServable."""
    try:
        with Image.open(head) as image:  # reads the header only; a file object passed in stays open
            kind = Image.MIME.get(image.format or "")
    except Exception:  # Pillow raises many kinds on bytes that are no image
        kind = None
    if not kind or not kind.startswith("image/"):
        raise NotServable("it is not an image")
    return kind


def open_item_file(item: Item, upload_dir: Path) -> ItemFile:
    """The item's own file, checked and typed, at its start; or NotServable."""
    f = open_checked(item, Path(item.source), upload_dir)
    try:
        media_type = image_type(f)
        f.seek(0)
        return ItemFile(f, os.fstat(f.fileno()).st_size, media_type)
    except BaseException:
        f.close()
        raise
