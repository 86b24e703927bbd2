"""The dashboard: a read-only web view of a workspace behind sign-in (``sealml ui``)."""
