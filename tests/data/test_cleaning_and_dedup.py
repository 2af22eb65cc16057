"""Normalisation, filters, and both kinds of deduplication on planted duplicates."""

from __future__ import annotations

from types import SimpleNamespace

from quark.data.cleaning import normalize, rejection
from quark.data.dedup import Deduplicator
from quark.data.sources import decode

RULES = SimpleNamespace(
    min_chars=10, max_chars=1000, max_undecodable_ratio=0.01, max_nonprintable_ratio=0.01
)
DEDUP = SimpleNamespace(exact=True, near=True, threshold=0.8, num_perm=128, shingle_size=3)

ARTICLE = " ".join(
    f"word{i} appears in sentence number {i} of this fairly long planted document"
    for i in range(60)
)


def test_normalize_composes_unicode_and_line_endings() -> None:
    assert normalize("cafe\u0301\r\nx\ry", "NFC") == "caf\u00e9\nx\ny"
    assert normalize("\ufb01", "NFKC") == "fi"
    assert normalize("\ufb01\r\n", "none") == "\ufb01\n"


def test_each_filter_names_its_rule() -> None:
    assert rejection("short", 0, RULES) == "too_short"
    assert rejection("x" * 1001, 0, RULES) == "too_long"
    assert rejection("a" * 100, 5, RULES) == "undecodable"
    assert rejection("a" * 100 + "\x00\x01", 0, RULES) == "nonprintable"
    assert rejection("def f():\n\treturn 1\n" * 3, 0, RULES) is None


def test_decode_counts_undecodable_bytes() -> None:
    text, bad = decode(b"ok \xff\xfe done \xe2\x82\xac")
    assert bad == 2 and text.startswith("ok \ufffd") and text.endswith("\u20ac")
    assert decode("d\u00e9j\u00e0 \ufffd vu".encode())[1] == 0  # a real U+FFFD is not a bad byte


def test_exact_and_near_duplicates_are_caught_and_distinct_documents_kept() -> None:
    dedup = Deduplicator(DEDUP)
    near = ARTICLE.replace("word7 ", "wordseven ").replace("word42 ", "wordfortytwo ")
    other = " ".join(f"entirely different text {i} about other matters" for i in range(60))
    assert dedup.duplicate_of(ARTICLE) is None
    assert dedup.duplicate_of(ARTICLE) == "exact_duplicate"
    assert dedup.duplicate_of(near) == "near_duplicate"
    assert dedup.duplicate_of(other) is None


def test_dedup_can_be_switched_off_rule_by_rule() -> None:
    only_exact = Deduplicator(SimpleNamespace(**{**vars(DEDUP), "near": False}))
    assert only_exact.duplicate_of(ARTICLE) is None
    assert only_exact.duplicate_of(ARTICLE.replace("word7 ", "x ")) is None
    assert only_exact.duplicate_of(ARTICLE) == "exact_duplicate"
