"""Exact and near-duplicate detection: stable 64-bit keys, MinHash over character shingles, LSH bands.

Everything here is stable across processes and machines (no Python `hash()`, no unseeded randomness),
so the pipeline can compute keys in many workers and compare them in sharded actors.
`find_duplicates` is the single-process reference the pipeline's result must equal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np

from vaelm.config.text import DedupConfig

DuplicateKind = Literal["exact", "near"]

_MASK64 = (1 << 64) - 1
_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_MAX_BLOCK = 1 << 14  # shingles per block when hashing long texts: bounds memory to num_perm x 16k x 8 bytes


def _key(data: str, *, person: bytes) -> int:
    digest = hashlib.blake2b(data.encode("utf-8", "surrogatepass"), digest_size=8, person=person).digest()
    return int.from_bytes(digest, "little")


def exact_key(text: str) -> int:
    """A uint64 (0 <= key < 2**64) identifying `text` exactly; pass normalised text."""
    return _key(text, person=b"vaelm-exact")


def id_key(doc_id: str) -> int:
    """A uint64 identifying a document id; salted so it never equals an `exact_key` by construction."""
    return _key(doc_id, person=b"vaelm-id")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, element-wise on uint64 (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def shingle_hashes(text: str, size: int) -> np.ndarray:
    """Distinct 64-bit hashes of the character `size`-grams of `text` (the whole text if shorter)."""
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(np.uint64)
    width = min(size, len(points))
    count = len(points) - width + 1
    h = np.full(count, _FNV_OFFSET, dtype=np.uint64)
    h ^= np.uint64(width)
    with np.errstate(over="ignore"):
        for j in range(width):  # FNV-1a over code points, all shingles at once
            h = (h ^ points[j : j + count]) * _FNV_PRIME
        return np.unique(_splitmix64(h))


class MinHasher:
    """MinHash signatures of character-shingle sets, and their LSH band keys.

    Permutation i maps a shingle hash x to a_i * x + b_i (mod 2**64), a_i odd: a bijection of the 64-bit
    space, applied to hashes that splitmix64 already scattered. a and b come from `seed` alone.
    """

    def __init__(self, *, num_perm: int, shingle_size: int, seed: int, bands: int, rows: int) -> None:
        if bands * rows > num_perm:
            raise ValueError(f"bands x rows = {bands * rows} exceeds num_perm={num_perm}; lower bands or rows")
        self.num_perm, self.shingle_size, self.bands, self.rows = num_perm, shingle_size, bands, rows
        rng = np.random.Generator(np.random.PCG64(seed))
        self._a = rng.integers(0, 2**64, size=(num_perm, 1), dtype=np.uint64, endpoint=False) | np.uint64(1)
        self._b = rng.integers(0, 2**64, size=(num_perm, 1), dtype=np.uint64, endpoint=False)

    @classmethod
    def from_config(cls, cfg: DedupConfig) -> MinHasher:
        """A MinHasher with the bands and rows of `cfg`, or those `lsh_params` picks when it leaves them null."""
        if cfg.bands is not None and cfg.rows is not None:
            bands, rows = cfg.bands, cfg.rows
        else:
            bands, rows = lsh_params(cfg.near_threshold, cfg.num_perm)
        return cls(num_perm=cfg.num_perm, shingle_size=cfg.shingle_size, seed=cfg.seed, bands=bands, rows=rows)

    def signature(self, text: str) -> np.ndarray:
        """The MinHash signature of `text`: uint64 array of shape (num_perm,)."""
        shingles = shingle_hashes(text, self.shingle_size)
        sig = np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for start in range(0, len(shingles), _MAX_BLOCK):
                block = shingles[None, start : start + _MAX_BLOCK]  # (1, S)
                np.minimum(sig, (self._a * block + self._b).min(axis=1), out=sig)  # (P, S) -> (P,)
        return sig

    def band_keys(self, sig: np.ndarray) -> list[int]:
        """One uint64 per band; the band index is hashed in, so equal rows in different bands differ."""
        rows = np.ascontiguousarray(sig[: self.bands * self.rows], dtype="<u8").reshape(self.bands, self.rows)
        return [_band_key(band.tobytes(), i) for i, band in enumerate(rows)]


def _band_key(band: bytes, index: int) -> int:
    digest = hashlib.blake2b(band, digest_size=8, person=b"vaelm-band", salt=index.to_bytes(16, "little")).digest()
    return int.from_bytes(digest, "little")


def _collision_probability(s: np.ndarray, bands: int, rows: int) -> np.ndarray:
    return 1.0 - (1.0 - s**rows) ** bands


def _integrate(f: np.ndarray, x: np.ndarray) -> float:
    return float(np.sum((f[1:] + f[:-1]) * np.diff(x)) / 2.0)


@lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows), bands x rows <= num_perm, minimising false positives + false negatives (as datasketch).

    A false positive is a pair with Jaccard below `threshold` whose bands collide, weighted by the area
    under the collision curve below the threshold; a false negative the area above it.
    """
    below = np.linspace(0.0, threshold, 2001)
    above = np.linspace(threshold, 1.0, 2001)
    best, best_error = (1, 1), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = _integrate(_collision_probability(below, bands, rows), below)
            fn = _integrate(1.0 - _collision_probability(above, bands, rows), above)
            if fp + fn < best_error:
                best, best_error = (bands, rows), fp + fn
    return best


class UnionFind:
    """Disjoint sets over integer keys; the smallest key of a set is its root (so the lowest index survives)."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        """The root of x's set (x itself if never seen)."""
        parent = self.parent
        root = x
        while parent.get(root, root) != root:
            root = parent[root]
        while x != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, a: int, b: int) -> int:
        """Merge the sets of a and b; returns the new root, the smaller of the two roots."""
        ra, rb = self.find(a), self.find(b)
        root, child = (ra, rb) if ra <= rb else (rb, ra)
        if root != child:
            self.parent[child] = root
        return root


def find_duplicates(texts: Sequence[str], cfg: DedupConfig) -> dict[int, tuple[int, DuplicateKind]]:
    """Index of each removed text -> (index of its survivor, "exact" or "near").

    Texts are grouped by exact key (cfg.exact) and by any shared LSH band key (cfg.near; no pairwise
    verification, as datatrove does), transitively. The lowest index of a group survives. A removed text
    is "exact" when it equals its survivor, otherwise "near".
    """
    uf = UnionFind()
    keys = [exact_key(t) for t in texts]
    if cfg.exact:
        _union_by_key(uf, [[k] for k in keys])
    if cfg.near:
        hasher = MinHasher.from_config(cfg)
        _union_by_key(uf, [hasher.band_keys(hasher.signature(t)) for t in texts])
    removed: dict[int, tuple[int, DuplicateKind]] = {}
    for i in range(len(texts)):
        root = uf.find(i)
        if root != i:
            removed[i] = (root, "exact" if keys[root] == keys[i] else "near")
    return removed


def _union_by_key(uf: UnionFind, keys_per_text: Sequence[Sequence[int]]) -> None:
    """Union texts that share any key in the same slot (slot = band number, or 0 for the exact key)."""
    first_seen: dict[tuple[int, int], int] = {}
    for index, keys in enumerate(keys_per_text):
        for slot, key in enumerate(keys):
            other = first_seen.setdefault((slot, key), index)
            if other != index:
                uf.union(other, index)
