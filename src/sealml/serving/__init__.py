"""Serving registered models over HTTPS: authentication, limits, validation, hardened
outputs, metrics and hot swap (``sealml serve``)."""
