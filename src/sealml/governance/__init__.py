"""Governance: model cards (lineage, provenance and audit live in the workspace)."""
