"""Data security: pinned ingestion, validation, PII handling, poisoning screening."""
