"""The ``sealml`` command: a thin layer over the Python API."""
