"""fastnorm: fast, accurate LayerNorm and RMSNorm for NumPy arrays on CPUs."""
import os as _os
import sys as _sys

__version__ = "0.1.0"


def _find_installed_core():
    """Running from a source checkout (``python -m fastnorm`` in the repo puts
    the checkout first on sys.path): borrow the compiled core from the copy
    that ``pip install .`` put in site-packages."""
    here = _os.path.dirname(_os.path.abspath(__file__))
    for entry in _sys.path:
        candidate = _os.path.join(_os.path.abspath(entry or _os.curdir), "fastnorm")
        if candidate == here or not _os.path.isdir(candidate):
            continue
        if any(name.startswith("_core.") and name.endswith((".so", ".pyd"))
               for name in _os.listdir(candidate)):
            return candidate
    return None


try:
    from . import _core
except ImportError:
    _installed = _find_installed_core()
    if _installed is None:
        raise ImportError(
            "fastnorm's compiled core is not built. Install the package with "
            "'pip install .' (or 'pip install -e .' for development).") from None
    __path__.append(_installed)
    from . import _core

from ._api import (  # noqa: E402
    add_layer_norm, add_rms_norm, layer_norm, layer_norm_backward, rms_norm, rms_norm_backward)
from ._config import available_isas, get_isa, show_config  # noqa: E402
from ._modules import IncompatibleKeys, LayerNorm, RMSNorm  # noqa: E402

__all__ = ["layer_norm", "rms_norm", "layer_norm_backward", "rms_norm_backward",
           "add_layer_norm", "add_rms_norm", "LayerNorm", "RMSNorm", "IncompatibleKeys", "available_isas", "get_isa", "show_config",
           "__version__"]
