"""Watched terms as RE2 patterns for ClickHouse `match()`.

A term is matched case-insensitively as a phrase.  Where a term starts or ends with an ASCII
letter or digit that end must sit on a word boundary, so `ban` does not match "banana"; Chinese
has no spaces between words, so a Chinese term matches anywhere.  Patterns always travel as
query parameters, never as SQL text.
"""

from __future__ import annotations

import re

_RE2_SPECIAL = set("\\.+*?()|[]{}^$")
_ASCII_WORD = re.compile(r"[A-Za-z0-9_]")


def term_pattern(term: str) -> str:
    """A case-insensitive RE2 pattern matching `term` as a phrase (inner whitespace flexible)."""
    words = term.split()
    body = r"\s+".join("".join("\\" + c if c in _RE2_SPECIAL else c for c in word) for word in words)
    start = r"\b" if _ASCII_WORD.match(words[0][0]) else ""
    end = r"\b" if _ASCII_WORD.match(words[-1][-1]) else ""
    return f"(?i){start}{body}{end}"
