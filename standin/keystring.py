"""The KeyString subset resume tokens are made of (ascending, version V1), as the server's
``src/mongo/db/storage/key_string/key_string.cpp`` writes it: each value is a type byte then its
bytes; integers are stored shifted left by one (the low bit flags a fraction), big-endian, in as
few bytes as they need; the key ends with 0x04.
"""

from __future__ import annotations

from typing import Any

from bson import Binary, Timestamp

from .errors import CommandError

END = bytes([0x04])
_TIMESTAMP, _ZERO, _FALSE, _TRUE, _NULL, _END = 0x82, 0x29, 0x6E, 0x6F, 0x14, 0x04
_STRING, _OBJECT, _BINDATA, _OID = 0x3C, 0x46, 0x5A, 0x64
_POSITIVE_1, _POSITIVE_8 = 0x2B, 0x32  # kNumericPositive1ByteInt .. 8ByteInt
_NEGATIVE_8, _NEGATIVE_1 = 0x20, 0x27


def timestamp(cluster_time: int) -> bytes:
    return bytes([_TIMESTAMP]) + cluster_time.to_bytes(8, "big")


def integer(value: int) -> bytes:
    if value == 0:
        return bytes([_ZERO])
    shifted = value << 1
    size = (shifted.bit_length() + 7) // 8
    return bytes([_POSITIVE_1 - 1 + size]) + shifted.to_bytes(size, "big")


def boolean(value: bool) -> bytes:
    return bytes([_TRUE if value else _FALSE])


def unreadable(why: str) -> CommandError:
    # The server's KeyString decoder refuses malformed bytes with assertions of its own, which
    # its tests do not pin down; the stand-in answers FailedToParse (docs/standin.md).
    return CommandError(9, f"the stand-in cannot decode this resume token: {why}")


class Reader:
    """Decodes timestamps, integers, booleans, null, strings, ObjectIds, binary data and objects
    of those; anything else is refused with ``unreadable``."""

    def __init__(self, raw: bytes) -> None:
        self._raw = raw
        self._at = 0

    def _take(self, count: int) -> bytes:
        if self._at + count > len(self._raw):
            raise unreadable("it ends in the middle of a value")
        chunk = self._raw[self._at : self._at + count]
        self._at += count
        return chunk

    def elements(self) -> list:
        values = []
        while self._at < len(self._raw):
            ctype = self._take(1)[0]
            if ctype == _END:
                if self._at != len(self._raw):
                    raise unreadable("bytes follow its end marker")
                return values
            values.append(self._value(ctype))
        return values  # a missing end marker: the server's decoder does not need one either

    def _cstring(self) -> str:
        end = self._raw.find(b"\x00", self._at)
        if end < 0:
            raise unreadable("a string has no terminator")
        text = self._raw[self._at : end]
        self._at = end + 1
        while self._at < len(self._raw) and self._raw[self._at] == 0xFF:  # an escaped NUL
            self._at += 1
            rest_end = self._raw.find(b"\x00", self._at)
            if rest_end < 0:
                raise unreadable("a string has no terminator")
            text += b"\x00" + self._raw[self._at : rest_end]
            self._at = rest_end + 1
        return text.decode("utf-8", "replace")

    def _value(self, ctype: int) -> Any:
        if ctype == _TIMESTAMP:
            ts = int.from_bytes(self._take(8), "big")
            return Timestamp(ts >> 32, ts & 0xFFFFFFFF)
        if ctype == _ZERO:
            return 0
        if _POSITIVE_1 <= ctype <= _POSITIVE_8 or _NEGATIVE_8 <= ctype <= _NEGATIVE_1:
            negative = ctype <= _NEGATIVE_1
            size = _NEGATIVE_1 - ctype + 1 if negative else ctype - _POSITIVE_1 + 1
            raw = self._take(size)
            if negative:
                raw = bytes(~b & 0xFF for b in raw)
            shifted = int.from_bytes(raw, "big")
            if shifted & 1:
                raise unreadable("it holds a fractional number")
            return -(shifted >> 1) if negative else shifted >> 1
        if ctype in (_FALSE, _TRUE):
            return ctype == _TRUE
        if ctype == _NULL:
            return None
        if ctype == _STRING:
            return self._cstring()
        if ctype == _OID:
            return self._take(12)
        if ctype == _BINDATA:
            size = self._take(1)[0]
            if size == 0xFF:
                size = int.from_bytes(self._take(4), "big")
            subtype = self._take(1)[0]
            return Binary(self._take(size), subtype)
        if ctype == _OBJECT:
            obj = {}
            while self._take(1)[0] != 0:  # each field: its type, its name, then its value
                name = self._cstring()
                obj[name] = self._value(self._take(1)[0])
            return obj
        raise unreadable(f"KeyString type 0x{ctype:02X} is not one the stand-in reads")
