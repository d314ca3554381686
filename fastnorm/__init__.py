"""fastnorm: fast, accurate LayerNorm and RMSNorm for NumPy arrays on CPUs."""

import os as _os
import sys as _sys

from . import _sources

__version__ = "0.1.0"
_HERE = _os.path.dirname(_os.path.abspath(__file__))


def _has_core(folder):
    return any(
        name.startswith("_core.") and name.endswith((".so", ".pyd")) for name in _os.listdir(folder)
    )


def _installed_copy():
    """Another fastnorm package on sys.path with a compiled core (the one
    ``pip install .`` put in site-packages), or None."""
    for entry in _sys.path:
        candidate = _os.path.join(_os.path.abspath(entry or _os.curdir), "fastnorm")
        if candidate != _HERE and _os.path.isdir(candidate) and _has_core(candidate):
            return candidate
    return None


def _defer_to(installed):
    """Hand the import over to the installed copy, whole: its Python and its
    compiled core come from one build, never this checkout's Python with
    another build's C.  The import system returns what sys.modules holds
    once this file has run."""
    import importlib.util

    for name in [m for m in _sys.modules if m.startswith(__name__ + ".")]:
        del _sys.modules[name]  # this checkout's submodules (e.g. _sources)
    spec = importlib.util.spec_from_file_location(
        __name__, _os.path.join(installed, "__init__.py"), submodule_search_locations=[installed]
    )
    if spec is None or spec.loader is None:  # (not for a .py file)
        raise ImportError(f"fastnorm: cannot load the installed copy in {installed}")
    module = importlib.util.module_from_spec(spec)
    _sys.modules[__name__] = module
    spec.loader.exec_module(module)
    module.__dict__["_deferred_from"] = _HERE


def _check_core_matches_sources(core):
    """In a source checkout, refuse a compiled core built from other sources
    (another commit's, or C edited since the build)."""
    root = _sources.checkout_root(_HERE)
    if root is None or not core.source_fingerprint:
        return
    if _sources.fingerprint(root) != core.source_fingerprint:
        raise ImportError(
            f"fastnorm: the compiled core {core.__file__} was built from other sources than "
            f"those in {root} now. Rebuild it: 'pip install -e .' or "
            f"'python setup.py build_ext --inplace' in {root}."
        )


if not _has_core(_HERE):
    # not built here (a source checkout after 'pip install .'): never import a
    # core from elsewhere next to this Python (an editable install's finder
    # would offer one); run the installed copy instead, or say how to build
    _installed = _installed_copy()
    if _installed is None:
        raise ImportError(
            "fastnorm's compiled core is not built. Install the package with "
            "'pip install .' (or 'pip install -e .' for development)."
        )
    _defer_to(_installed)
else:
    from . import _core

    if _os.path.dirname(_os.path.abspath(_core.__file__)) != _HERE:
        raise ImportError(
            f"fastnorm: {_HERE} imported the compiled core of another copy, "
            f"{_core.__file__}; rebuild this one ('pip install -e .')"
        )
    _deferred_from = None  # set on an installed copy that a checkout deferred to
    _check_core_matches_sources(_core)
    from ._api import (
        add_layer_norm,
        add_rms_norm,
        layer_norm,
        layer_norm_backward,
        rms_norm,
        rms_norm_backward,
    )
    from ._config import available_isas, get_isa, show_config
    from ._group import GroupNorm, group_norm, group_norm_backward
    from ._modules import IncompatibleKeys, LayerNorm, RMSNorm
    from ._quantized import (
        add_layer_norm_quant,
        add_rms_norm_quant,
        layer_norm_quant,
        quantize,
        rms_norm_quant,
    )

__all__ = [
    "layer_norm",
    "rms_norm",
    "layer_norm_backward",
    "rms_norm_backward",
    "add_layer_norm",
    "add_rms_norm",
    "quantize",
    "rms_norm_quant",
    "layer_norm_quant",
    "add_rms_norm_quant",
    "add_layer_norm_quant",
    "group_norm",
    "group_norm_backward",
    "LayerNorm",
    "RMSNorm",
    "GroupNorm",
    "IncompatibleKeys",
    "available_isas",
    "get_isa",
    "show_config",
    "__version__",
]
