"""The sealml version (one place; recorded in provenance and cache keys)."""

__version__ = "0.1.0"
