"""Provenance: in-toto statements with SLSA Provenance v1 predicates in DSSE envelopes,
and OpenLineage export."""
