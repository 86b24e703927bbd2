"""Blob backends, artifact metadata, seal and unseal."""

from .artifacts import ArtifactDraft, ArtifactInfo, VerifyingReader
from .blobs import BlobStore, LocalBlobStore

__all__ = ["ArtifactDraft", "ArtifactInfo", "BlobStore", "LocalBlobStore", "VerifyingReader"]
