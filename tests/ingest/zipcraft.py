"""Hand-built zip archives for the hostile-input tests: thousands of entries in milliseconds
(zipfile would deflate every entry again), with any flag or name a hostile client might send."""

from __future__ import annotations

import struct
import zlib


def raw_zip(entries: list[tuple[str, bytes]], deflate: bool = True, flags: int = 0,
            external_attr: int = 0) -> bytes:
    """A valid zip of ``(name, data)`` entries. Identical data is compressed once."""
    out, central, cache = bytearray(), bytearray(), {}
    for name, data in entries:
        key = (id(data), len(data))
        if key not in cache:
            if deflate:
                c = zlib.compressobj(9, zlib.DEFLATED, -15)
                body = c.compress(data) + c.flush()
            else:
                body = data
            cache[key] = (body, zlib.crc32(data))
        body, crc = cache[key]
        n = name.encode()
        method = 8 if deflate else 0
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, flags, method, 0, 0x21, crc,
                           len(body), len(data), len(n), 0) + n + body
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x0314, 20, flags, method, 0,
                               0x21, crc, len(body), len(data), len(n), 0, 0, 0, 0,
                               external_attr, offset) + n
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central),
                      len(out), 0)
    return bytes(out + central + end)
