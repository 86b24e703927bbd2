"""RFC 9162 (Certificate Transparency v2, as RFC 6962) Merkle tree hashing and proofs.

Leaves hash as ``SHA-256(0x00 || data)``, interior nodes as ``SHA-256(0x01 || left || right)``
and the empty tree as ``SHA-256("")``. A tree of n leaves splits at the largest power of two
below n, which is what lets :class:`Frontier` keep just one hash per set bit of n.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below *n* (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The right border of a tree: the roots of its perfect subtrees, largest first.

    Appending is amortised O(1) hashes and the root is O(log n), so the ledger can hold the
    tree state in one row however many events it has.
    """

    __slots__ = ("hashes", "size")

    def __init__(self, size: int = 0, hashes: list[bytes] | None = None) -> None:
        self.size = size
        self.hashes = hashes if hashes is not None else []
        if len(self.hashes) != size.bit_count():
            raise ValueError("frontier does not match its tree size")

    def append(self, leaf: bytes) -> None:
        node = leaf
        size = self.size
        hashes = self.hashes
        while size & 1:
            node = hashlib.sha256(b"\x01" + hashes.pop() + node).digest()
            size >>= 1
        hashes.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        node = self.hashes[-1]
        for left in reversed(self.hashes[:-1]):
            node = node_hash(left, node)
        return node

    def to_bytes(self) -> bytes:
        return b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, size: int, data: bytes) -> Frontier:
        if len(data) != HASH_SIZE * size.bit_count():
            raise ValueError("frontier does not match its tree size")
        return cls(size, [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)])

    def copy(self) -> Frontier:
        return Frontier(self.size, list(self.hashes))


def root_of(leaves: Sequence[bytes]) -> bytes:
    """Merkle tree hash of a list of leaf hashes."""
    frontier = Frontier()
    for leaf in leaves:
        frontier.append(leaf)
    return frontier.root()


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """The audit path of leaf *index* in the tree of *leaves* (RFC 9162 §2.1.3.1)."""
    if not 0 <= index < len(leaves):
        raise ValueError("leaf index outside the tree")
    path: list[bytes] = []
    lo, hi = 0, len(leaves)
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            path.append(root_of(leaves[lo + k : hi]))
            hi = lo + k
        else:
            path.append(root_of(leaves[lo : lo + k]))
            lo = lo + k
    path.reverse()
    return path


def verify_inclusion(
    index: int, size: int, leaf: bytes, path: Sequence[bytes], root: bytes
) -> bool:
    """Check an audit path (RFC 9162 §2.1.3.2)."""
    if index >= size or index < 0:
        return False
    fn, sn, node = index, size - 1, leaf
    for sibling in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            node = node_hash(sibling, node)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            node = node_hash(node, sibling)
        fn >>= 1
        sn >>= 1
    return sn == 0 and node == root


def consistency_proof(old_size: int, leaves: Sequence[bytes]) -> list[bytes]:
    """Proof that the tree of the first *old_size* leaves is a prefix (RFC 9162 §2.1.4.1)."""
    new_size = len(leaves)
    if not 0 < old_size <= new_size:
        raise ValueError("old tree size must be between 1 and the new size")
    path: list[bytes] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append(root_of(leaves[lo + k : hi]))
            hi = lo + k
        else:
            path.append(root_of(leaves[lo : lo + k]))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        path.append(root_of(leaves[lo:hi]))
    path.reverse()
    return path


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]
) -> bool:
    """Check a consistency proof (RFC 9162 §2.1.4.2)."""
    if old_size < 0 or old_size > new_size:
        return False
    if old_size == new_size:
        return not path and old_root == new_root
    if old_size == 0:
        return not path
    if not path:
        return False
    proof = list(path)
    if old_size & (old_size - 1) == 0:
        proof.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for node in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
