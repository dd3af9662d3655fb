"""Files that tests make to look like a user's worst input (importable from every test folder:
pytest puts this directory on sys.path because of its conftest.py)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


def header_only_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` and that holds no pixels at all (8 bytes of
    signature, an IHDR chunk, an IEND): what a decompression bomb looks like before it is decoded.
    A limit must act on this header, before any pixel is allocated."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path
