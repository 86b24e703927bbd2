"""Cryptographic primitives: streaming AEAD, digests, signatures, key derivation.

This layer makes no policy decisions and chooses no storage; higher layers decide
which key protects what and where bytes live.
"""
