"""sealml: machine-learning pipelines that are secure by default."""

from ._version import __version__
from .crypto.secret import Secret
from .errors import SealmlError
from .workspace import Workspace

__all__ = ["SealmlError", "Secret", "Workspace", "__version__"]
