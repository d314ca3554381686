"""The fingerprint of the sources a compiled core is built from.

setup.py bakes it into ``_core`` at build time; a source checkout compares
it with its own sources at import, so a core built from other sources (an
older commit, or C edited since the last build) refuses to load instead of
joining one commit's Python to another commit's C.  Installed copies carry
no sources and skip the check.  This module imports nothing of fastnorm:
setup.py runs it by path, before the package can be imported.
"""

import hashlib
import os

# (directory, file endings) of the compiled core's sources, from the checkout root
_SOURCE_SETS = (("src", (".c", ".h")), ("fastnorm", (".pyx", ".pxi", ".pxd", ".h")))


def source_files(root):
    """The compiled core's source files under root, sorted, relative."""
    files = []
    for folder, endings in _SOURCE_SETS:
        path = os.path.join(root, folder)
        if os.path.isdir(path):
            files += [f"{folder}/{name}" for name in os.listdir(path) if name.endswith(endings)]
    return sorted(files)


def fingerprint(root):
    """SHA-256 over the names and contents of root's core sources."""
    digest = hashlib.sha256()
    for rel in source_files(root):
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read()
        digest.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
    return digest.hexdigest()


def checkout_root(package_dir):
    """The source checkout package_dir belongs to, or None for an installed copy."""
    root = os.path.dirname(os.path.abspath(package_dir))
    if os.path.isfile(os.path.join(root, "setup.py")) and os.path.isdir(os.path.join(root, "src")):
        return root
    return None
