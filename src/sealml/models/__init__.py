"""Model supply chain: the malicious-file scanner, safe formats, signing, registry."""
