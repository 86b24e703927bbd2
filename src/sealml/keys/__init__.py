"""Key providers, envelope encryption of data keys, rotation and crypto-shredding."""

from .provider import DataKeyRecord, DataKeyRepository, KeyProvider, WrappedKey

__all__ = ["DataKeyRecord", "DataKeyRepository", "KeyProvider", "WrappedKey"]
