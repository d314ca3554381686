"""Which kernels run, and how the package was built."""

from __future__ import annotations

import sys
from typing import TextIO

from . import _core


def available_isas() -> list[str]:
    """Instruction sets that this CPU and this build support, best first.

    Returns
    -------
    list of str
        For example ``['avx512', 'avx2', 'scalar']`` on x86-64 or
        ``['neon', 'scalar']`` on aarch64; ``'scalar'`` (portable C) is
        always last.
    """
    return _core.available_isas()


def get_isa() -> str:
    """The instruction set whose kernels are in use.

    The best of `available_isas` is chosen at import; set the environment
    variable ``FASTNORM_ISA`` before importing fastnorm to force another.
    """
    return _core.isa()


def show_config(file: TextIO | None = None) -> None:
    """Print the build, the kernels in use, the thread count and
    ``threadpoolctl.threadpool_info()``."""
    from . import __version__

    file = file or sys.stdout
    print(f"fastnorm {__version__}", file=file)
    print(f"  OpenMP:          {'on' if _core.openmp_enabled else 'off (serial build)'}", file=file)
    print(f"  compiler flags:  {_core.build_flags}", file=file)
    print(f"  ISA in use:      {get_isa()}  (available: {', '.join(available_isas())})", file=file)
    forked = "  (forked child: single-threaded)" if _core.in_forked_child() else ""
    print(f"  max threads:     {_core.max_threads()}{forked}", file=file)
    n, cached, cap = _core.buffer_cache_info()
    print(
        f"  buffer cache:    {n} buffers, {cached >> 20} MiB cached, cap {cap >> 20} MiB "
        "(FASTNORM_BUFFER_CACHE_MB)",
        file=file,
    )
    try:
        import threadpoolctl
    except ImportError:  # pragma: no cover
        print("  threadpoolctl:   not installed", file=file)
        return
    for info in threadpoolctl.threadpool_info():
        print(
            f"  threadpool:      {info.get('user_api')} {info.get('internal_api')} "
            f"threads={info.get('num_threads')} {info.get('filepath')}",
            file=file,
        )
