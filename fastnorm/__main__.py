"""``python -m fastnorm``: the main job (build report, self-check, a timing
against plain NumPy); ``python -m fastnorm bench``: the benchmark.  Both live
in fastnorm.bench, which no runtime module imports."""

import sys

from fastnorm.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
