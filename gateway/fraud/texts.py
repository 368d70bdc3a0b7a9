"""Near-duplicate free texts: character shingles, MinHash signatures (datasketch) and LSH band keys.

Chinese has no spaces between words, so a text is compared by its overlapping 3-character pieces
(shingles); MinHash estimates the Jaccard similarity of two shingle sets, and texts whose signatures
agree on one whole band (4 of the 64 values) become candidates, which are then compared exactly. With
16 bands of 4 rows a pair at similarity 0.7 is a candidate with probability 1 - (1 - 0.7^4)^16 ≈ 0.99,
one at 0.3 with about 0.12: few candidates to check, almost no pair above the threshold missed.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import Any

SHINGLE = 3
NUM_PERM = 64
BANDS = 16
ROWS = NUM_PERM // BANDS
_SEED = 20261204


def normalise(text: str) -> str:
    """Letters and digits only, lower case: punctuation, spaces and emoji do not make texts differ."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


def shingles(normalised: str) -> frozenset[str]:
    if len(normalised) <= SHINGLE:
        return frozenset((normalised,)) if normalised else frozenset()
    return frozenset(normalised[i : i + SHINGLE] for i in range(len(normalised) - SHINGLE + 1))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


@lru_cache(maxsize=1)
def _template() -> Any:
    from datasketch import MinHash  # type: ignore[import-untyped]  # no stubs published

    # One set of permutations for every signature (building them is most of the cost of a MinHash).
    return MinHash(num_perm=NUM_PERM, seed=_SEED)


def band_keys(pieces: frozenset[str]) -> list[int]:
    """The text's LSH band keys, one per band, as signed 64-bit integers (a BIGINT column)."""
    from datasketch import MinHash

    template = _template()
    signature = MinHash(num_perm=NUM_PERM, permutations=template.permutations, scheme=template.scheme)
    signature.update_batch([p.encode("utf-8") for p in sorted(pieces)])
    values = signature.hashvalues
    keys = []
    for band in range(BANDS):
        chunk = values[band * ROWS : (band + 1) * ROWS].tobytes()
        digest = hashlib.blake2b(chunk, digest_size=8, person=b"fraud-band" + bytes([band])).digest()
        keys.append(int.from_bytes(digest, "big", signed=True))
    return keys
