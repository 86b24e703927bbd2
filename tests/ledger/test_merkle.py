"""Merkle hashing and proofs against the RFC 6962 reference vectors and a naive model."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sealml.ledger.merkle import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# Leaves and roots from the Certificate Transparency reference test data.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_PATHS = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {
    (1, 8): CT_PATHS[(0, 8)],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}

LEAVES = [leaf_hash(data) for data in CT_LEAVES]


def naive_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(naive_root(leaves[:k]), naive_root(leaves[k:]))


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert Frontier().root() == EMPTY_ROOT


def test_roots_match_reference_vectors() -> None:
    for size, expected in enumerate(CT_ROOTS, start=1):
        assert root_of(LEAVES[:size]).hex() == expected


def test_proofs_match_reference_vectors() -> None:
    for (index, size), path in CT_PATHS.items():
        assert [h.hex() for h in inclusion_proof(index, LEAVES[:size])] == path
    for (old, new), path in CT_CONSISTENCY.items():
        assert [h.hex() for h in consistency_proof(old, LEAVES[:new])] == path


def test_frontier_survives_serialisation() -> None:
    frontier = Frontier()
    for leaf in LEAVES[:7]:
        frontier.append(leaf)
    restored = Frontier.from_bytes(7, frontier.to_bytes())
    restored.append(LEAVES[7])
    assert restored.root().hex() == CT_ROOTS[7]


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=70), st.data())
def test_proofs_round_trip_and_reject_wrong_inputs(size: int, data: st.DataObject) -> None:
    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(size)]
    root = root_of(leaves)
    assert root == naive_root(leaves)
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    path = inclusion_proof(index, leaves)
    assert verify_inclusion(index, size, leaves[index], path, root)
    assert not verify_inclusion(index, size, leaf_hash(b"forged"), path, root)
    if size > 1:
        assert not verify_inclusion((index + 1) % size, size, leaves[index], path, root)
    old = data.draw(st.integers(min_value=1, max_value=size))
    proof = consistency_proof(old, leaves)
    assert verify_consistency(old, size, root_of(leaves[:old]), root, proof)
    if old < size:
        assert not verify_consistency(old, size, leaf_hash(b"other"), root, proof)
        forked = [*leaves[: old - 1], leaf_hash(b"fork"), *leaves[old:]]
        assert not verify_consistency(old, size, root_of(leaves[:old]), root_of(forked), proof)
