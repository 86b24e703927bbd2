"""sealml: machine-learning pipelines that are secure by default."""

from .crypto.secret import Secret
from .errors import SealmlError
from .workspace import Workspace

__all__ = ["SealmlError", "Secret", "Workspace"]
__version__ = "0.1.0"
