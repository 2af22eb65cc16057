"""Normalisation and quality filters. Each filter has a name so the data card can say what it
removed."""

from __future__ import annotations

import unicodedata
from typing import Any

ALLOWED_CONTROL = {"\n", "\t", "\r"}


def normalize(text: str, form: str) -> str:
    """Unicode normalisation (NFC or NFKC, or none) and Unix line endings."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if form == "none":
        return text
    return unicodedata.normalize("NFKC" if form == "NFKC" else "NFC", text)


def rejection(text: str, undecodable_bytes: int, rules: Any) -> str | None:
    """The name of the first filter `text` fails, or None when it passes them all."""
    length = len(text)
    if length < rules.min_chars:
        return "too_short"
    if length > rules.max_chars:
        return "too_long"
    if undecodable_bytes / max(length, 1) > rules.max_undecodable_ratio:
        return "undecodable"
    nonprintable = sum(1 for ch in text if not ch.isprintable() and ch not in ALLOWED_CONTROL)
    if nonprintable / length > rules.max_nonprintable_ratio:
        return "nonprintable"
    return None
