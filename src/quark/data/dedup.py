"""Exact deduplication by content hash, near-duplicate deduplication with MinHash LSH."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from datasketch import MinHash, MinHashLSH

WORD = re.compile(r"\w+")


class Deduplicator:
    """Keeps the first of each group of exact or near duplicates, streaming.

    Exact: sha256 of the normalised text. Near: Jaccard similarity of word n-gram shingles,
    estimated with MinHash and found with LSH (datasketch) at the configured threshold.
    """

    def __init__(self, rules: Any) -> None:
        self.exact = bool(rules.exact)
        self.near = bool(rules.near)
        self.num_perm = int(rules.num_perm)
        self.shingle_size = int(rules.shingle_size)
        self._hashes: set[bytes] = set()
        self._lsh = (
            MinHashLSH(threshold=float(rules.threshold), num_perm=self.num_perm)
            if self.near
            else None
        )
        self._count = 0

    def duplicate_of(self, text: str) -> str | None:
        """'exact_duplicate' or 'near_duplicate' if an earlier document matches, else None (and
        the document is remembered)."""
        if self.exact:
            digest = hashlib.sha256(text.encode()).digest()
            if digest in self._hashes:
                return "exact_duplicate"
            self._hashes.add(digest)
        if self._lsh is not None:
            signature = self._minhash(text)
            if self._lsh.query(signature):
                return "near_duplicate"
            self._lsh.insert(str(self._count), signature)
        self._count += 1
        return None

    def _minhash(self, text: str) -> MinHash:
        words = WORD.findall(text.lower())
        n = self.shingle_size
        shingles = {" ".join(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}
        signature = MinHash(num_perm=self.num_perm, seed=1)
        signature.update_batch([s.encode() for s in shingles])
        return signature
