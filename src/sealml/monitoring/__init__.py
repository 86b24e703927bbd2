"""Watching deployed models: drift and data quality against the sealed reference."""
