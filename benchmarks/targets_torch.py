"""The PyTorch speed targets (``fastnorm.torch`` against torch),
defined once and shared by ``python benchmarks/targets.py --torch`` and the
pytest-benchmark suite ``benchmarks/test_torch.py``.

Each target is one fastnorm.bench.torch_cases case (the package's comparison
machinery: building both calls, checking fastnorm's results against torch's,
timing them interleaved) with a goal: the largest acceptable ratio of
fastnorm's median time over torch's."""

import os
import sys
from dataclasses import dataclass

# Measure the checkout this script lives in, not whatever fastnorm is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastnorm.bench import harness, torch_cases


@dataclass(frozen=True)
class TorchTarget(torch_cases.TorchCase):
    """A TorchCase with a key (the pytest id) and a goal for fastnorm / torch."""

    key: str = ""
    goal: float = 0.0

    def met(self, row):
        return row.error is None and row.ratio <= self.goal


def _t(key, op, form, shape, dtype, grad, threads, goal):
    return TorchTarget(op, form, shape, dtype, grad, threads, key=key, goal=goal)


SMALL, BIG = (8, 768), (4096, 4096)

# The targets, in the order of the table they were set in.  The bf16 target is measured in both the
# function and the module form: a bf16 model calls the module, whose bf16
# weight and bias fastnorm must not widen on every call, and a caller of the
# function passes the same bf16 parameters.
TARGETS = (
    _t("ln_fn_small", "layer_norm", "function", SMALL, "float32", False, 1, 0.6),
    _t("ln_module_small", "layer_norm", "module", SMALL, "float32", False, 1, 0.5),
    _t("rms_fn_small", "rms_norm", "function", SMALL, "float32", False, 1, 0.2),
    _t("ln_fwdbwd_small", "layer_norm", "function", SMALL, "float32", True, 1, 1.0),
    _t("ln_fn_big", "layer_norm", "function", BIG, "float32", False, 2, 0.3),
    _t("ln_fwdbwd_big", "layer_norm", "function", BIG, "float32", True, 2, 0.5),
    _t("rms_fwdbwd_big", "rms_norm", "function", BIG, "float32", True, 2, 0.1),
    _t("ln_bf16_fn", "layer_norm", "function", (8, 4096), "bfloat16", False, 1, 0.7),
    _t("ln_bf16_module", "layer_norm", "module", (8, 4096), "bfloat16", False, 1, 0.7),
)
TARGETS_BY_KEY = {t.key: t for t in TARGETS}


def _goal_columns(row):
    target = row.case
    return f"{'<= ' + str(target.goal):>8}  {'yes' if target.met(row) else 'NO'}"


def run(repeats=21, isa=None, targets=None, progress=None, file=None):
    """Measure `targets` (default: TARGETS), print the table with the goals
    and the count met to `file`; returns the fastnorm.torch_cases.Run.  A
    target whose results differ from torch's is reported, not timed, and the
    others still run."""
    file = file or sys.stdout
    targets = TARGETS if targets is None else targets
    result = torch_cases.measure_all(targets, repeats, isa, progress)
    torch_cases.print_table(result, file, f"{'goal':>8}  met", _goal_columns)
    met = sum(row.case.met(row) for row in result.rows)
    print(
        f"{met} of {len(result.rows)} targets met; ratio = fastnorm median / torch median "
        "(lower is better)",
        file=file,
    )
    return result


def main(repeats=21, isa=None, threads=None):
    """The targets on `threads` (None: all) as a table; status 1 when a
    result differs from torch's (that is a failure, not a missed goal)."""
    targets = [t for t in TARGETS if threads is None or t.threads in threads]
    if not targets:
        print(f"no torch target runs on threads {threads}", file=sys.stderr)
        return 2
    result = run(repeats, isa, targets, progress=harness.Progress(len(targets)))
    return 0 if all(row.error is None for row in result.rows) else 1


if __name__ == "__main__":
    # the options are targets.py's: python benchmarks/targets.py --torch
    import targets

    sys.exit(targets.main(["--torch", *sys.argv[1:]]))
