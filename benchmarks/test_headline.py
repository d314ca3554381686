"""pytest-benchmark suite for the README's headline table (headline.py):
fastnorm, NumPy, PyTorch and ONNX Runtime on one small case each, one group
per call, every result checked against fastnorm's first; and the script's
table, end to end, on a tiny shape.

    pytest benchmarks/test_headline.py
    pytest benchmarks/test_headline.py --benchmark-disable   # once each, untimed (CI)

A competitor that is not installed is skipped."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import headline

SHAPE = (64, 768)


@pytest.mark.parametrize("competitor", ["fastnorm", *headline.NAMES])
@pytest.mark.parametrize("op", headline.OPS)
def test_headline(benchmark, op, competitor):
    fns = headline.competitors(op, SHAPE, threads=1)
    headline.check(fns, SHAPE)
    fn = fns[competitor]
    if isinstance(fn, str):
        if fn.startswith("wrong result"):
            pytest.fail(f"{competitor} {op}: {fn}")
        pytest.skip(f"{competitor}: {fn}")
    benchmark.group = f"headline {op} {SHAPE} float32, 1 thread"
    result = benchmark(fn)
    want = headline.as_array(fns["fastnorm"]())
    np.testing.assert_allclose(
        headline.as_array(result).reshape(SHAPE), want, atol=headline.TOLERANCE
    )


def test_headline_table(capsys):
    """The script's whole run on a tiny shape: its header and a table row per
    call and thread count, a figure or a note in every cell."""
    assert headline.main(["--shapes", "4x8", "--threads", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "CPU: " in out and "kernels " in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "(4, 8)" in line]
    assert [row.split(" | ")[0] for row in rows] == ["| layer_norm", "| rms_norm"]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 7 and all(cells)
        assert not any(c.startswith("wrong result") for c in cells)


def test_headline_refuses_unknown_ops():
    with pytest.raises(SystemExit):
        headline.main(["--ops", "batch_norm"])
