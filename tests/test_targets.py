"""The project's speed targets (benchmarks/targets.py and
benchmarks/targets_torch.py, outside the package): each target's ratio
counts a faster fastnorm as better and is judged against its goal in its
direction, a missing competitor is reported as not measured, the script's
flags measure the set they name, and the torch harness reports a wrong
result instead of timing it.  No timing is asserted: speed is measured,
never unit-tested."""

import dataclasses
import functools
import io
import os
import subprocess
import sys
import types

import ml_dtypes
import numpy as np
import pytest

pytest.importorskip("threadpoolctl")

import fastnorm

pytestmark = pytest.mark.any_isa

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
SCRIPT = os.path.join(BENCHMARKS, "targets.py")
sys.path.insert(0, BENCHMARKS)
import targets  # noqa: E402


def run_script(*args, timeout=600):
    out = subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout
    )
    return out


FASTNORM_CALLS = fastnorm._api.__all__  # every public function


def _small(case):
    """The case with its batch axes cut to a few rows (the normalized axis
    keeps its size, which the competitors' parameters are built for)."""
    keep = case.shape.index(case.norm_size) if case.layout == "channels_first" else -1
    axis = keep % len(case.shape)
    shape = tuple(n if a == axis else min(n, 2) for a, n in enumerate(case.shape))
    return dataclasses.replace(case, shape=shape)


@pytest.fixture
def fastnorm_runs_fastest(monkeypatch):
    """time_interleaved as a "timer" that runs each competitor once, on
    small inputs, and gives it a time of 1 when it calls fastnorm and 10
    when it does not: every target then compares a fast fastnorm with slow
    competitors (or with itself, a ratio of 1)."""
    from fastnorm.bench import harness

    called = []
    for name in FASTNORM_CALLS:
        real = getattr(fastnorm, name)

        def counted(*args, _real=real, **kwargs):
            called.append(True)
            return _real(*args, **kwargs)

        monkeypatch.setattr(fastnorm, name, counted)

    def timer(fns, repeats, min_time=0.0):
        times = {}
        for key, fn in fns.items():
            called.clear()
            fn()
            times[key] = 1.0 if called else 10.0
        return times

    monkeypatch.setattr(targets, "time_interleaved", timer)
    for name in ("competitors", "backward_competitors", "fused_competitors"):
        real = getattr(harness, name)
        monkeypatch.setattr(
            harness, name, lambda case, *a, _real=real, **k: _real(_small(case), *a, **k)
        )
    real_inputs = targets.make_inputs
    monkeypatch.setattr(targets, "make_inputs", lambda case, *a: real_inputs(_small(case), *a))


def every_target():
    return (
        targets.forward_targets()
        + targets.half_targets("bfloat16")
        + targets.half_targets("float16")
        + targets.backward_targets()
        + targets.fused_targets()
        + targets.spelling_targets()
    )


def test_every_target_counts_a_faster_fastnorm_as_better(fastnorm_runs_fastest):
    """Each target's ratio puts fastnorm's call on the side its goal
    rewards: with fastnorm faster than every competitor, a lower-is-better
    ratio is at most 1 and a higher-is-better one at least 1 (1 where both
    sides are fastnorm's: out= against allocating, one spelling against
    another, 2 threads against 1).  A target that divided the other way
    round would read a faster fastnorm as a slower one."""
    have_torch = harness_torch() is not None
    for target in every_target():
        ratio = target.measure(repeats=1)
        if ratio is None:  # a competitor that is not installed here
            assert not have_torch, target.name
            continue
        if target.higher_is_better:
            assert ratio >= 1.0, (target.name, ratio)
        else:
            assert ratio <= 1.0, (target.name, ratio)
        assert ratio in (0.1, 1.0, 10.0), (target.name, ratio)  # one call over another


def harness_torch():
    from fastnorm.bench import harness

    return harness.torch_module()


def test_each_goal_is_met_on_its_own_side_and_at_its_value():
    """met(): at most the goal for a lower-is-better target, at least it for
    a higher-is-better one, the goal itself met; references (no goal) are
    neither met nor missed."""
    for target in every_target() + targets.roof_references():
        if target.goal is None:
            assert target.met(1.0) is None, target.name
            continue
        assert target.goal > 0 and target.met(target.goal), target.name
        better, worse = (1.01, 0.99) if target.higher_is_better else (0.99, 1.01)
        assert target.met(target.goal * better) and not target.met(target.goal * worse)
    names = [t.name for t in every_target()]
    assert len(names) == len(set(names))  # one row per target in the report


def test_roof_is_a_streaming_copy_of_the_bytes_each_pass_moves(monkeypatch):
    """The roof copies, with streaming stores, as many bytes as the
    pass moves: a forward x's bytes, the backward 1.5 times, the fused add
    twice; np.copyto stays as a labelled reference."""
    from fastnorm import _testing
    from fastnorm.bench import harness

    copied = []
    monkeypatch.setattr(_testing, "stream_copy", lambda d, s, t: copied.append((d, s, t)))
    case = harness.Case("layer_norm", (64, 1024), "float32", "last", True)
    nbytes = 64 * 1024 * 4
    for fns, copies in (
        (harness.competitors(case, include_torch=False), 1.0),
        (harness.backward_competitors(case, include_torch=False), 1.5),
        (harness.fused_competitors(case), 2.0),
    ):
        assert {"roof", "copyto"} <= set(fns)
        fns["roof"]()
        dst, src, threads = copied.pop()
        assert dst.nbytes == src.nbytes == copies * nbytes
        assert dst.ctypes.data % 64 == 0 and src.ctypes.data % 64 == 0
        assert threads == fastnorm._core.max_threads()
    small = harness.competitors(harness.Case(shape=(8, 768)), include_torch=False)
    small["roof"]()
    assert copied.pop()[2] == 1  # below fastnorm's parallel threshold: one thread


def test_roof_scaling_reference_copies_on_one_and_on_two_threads(monkeypatch):
    """The reference "streaming copy 2 threads / 1 thread" times its two
    copies under one limit of 2 threads: each must still run on its own
    count (a roof that reads the limit at each call ran both on 2, and the
    reference was always about 1)."""
    from fastnorm import _testing

    used = []
    monkeypatch.setattr(_testing, "stream_copy", lambda d, s, t: used.append(t))

    def time_interleaved(fns, repeats, min_time=0.0):
        times = {}
        for name, fn in fns.items():
            fn()
            times[name] = float(used.pop())  # the "time": its thread count
        return times

    monkeypatch.setattr(targets, "time_interleaved", time_interleaved)
    (reference,) = targets.roof_references()
    assert reference.measure(repeats=1) == 2.0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("op", ["layer_norm", "rms_norm"])
def test_every_spelling_is_a_target_against_the_int_form_and_computes_the_same(op, dtype):
    """Each spelling of an (8, 768) call is measured against the int form,
    with one goal, on one thread, and computes what the int form does (the
    half-weight spellings: with their weights rounded to the half dtype)."""
    dt = np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    calls = targets.spellings(op, dt)
    want = calls.pop("int")()
    for name, call in calls.items():
        if "half weight" not in name:
            assert np.array_equal(call(), want, equal_nan=True), name
    rows = [t for t in targets.spelling_targets() if f" {dtype} " in t.name and op in t.name]
    assert len(rows) == len(calls)
    assert {(t.goal, t.threads, t.higher_is_better) for t in rows} == {(1.2, (1,), False)}


def test_report_judges_each_goal_in_its_direction():
    lower = targets.Target("lower", 1.0, (1,), lambda repeats: 1.5)
    higher = targets.Target("higher", 10.0, (1,), lambda repeats: 12.0, higher_is_better=True)
    missing = targets.Target("missing", 0.3, (2,), lambda repeats: None)
    buf = io.StringIO()
    targets.report(targets.measure([lower, higher, missing], repeats=1), file=buf)
    lines = buf.getvalue().splitlines()
    assert lines[1].startswith("lower") and lines[1].endswith("NO"), lines
    assert lines[2].startswith("higher") and lines[2].endswith("yes") and ">=" in lines[2]
    assert "n/a" in lines[3] and "not installed" in lines[3]
    assert lines[4] == "1 of 3 targets met"


def test_threads_selects_the_targets_that_fit():
    """--threads keeps the targets all of whose thread counts it names."""
    every = targets.forward_targets() + targets.roof_references()
    assert targets.select(every, None) == every
    assert targets.select(every, [1, 2]) == every
    for threads in ([1], [2]):
        selected = targets.select(every, threads)
        assert selected and all(set(t.threads) <= set(threads) for t in selected)
        left = [t for t in every if t not in selected]
        assert all(not set(t.threads) <= set(threads) for t in left)


def test_a_missing_competitor_is_reported_as_not_measured(monkeypatch):
    """Without torch, the targets against torch measure nothing (no timing
    starts) and the report says so, counting them as not met."""
    from fastnorm.bench import harness

    monkeypatch.setattr(harness, "torch_module", lambda: None)

    def no_timing(*args, **kwargs):
        raise AssertionError("a target without its competitor was timed")

    monkeypatch.setattr(targets, "time_interleaved", no_timing)
    case = harness.Case("layer_norm", (8, 768), "float32", "last", False)
    rows = targets.measure(
        [
            targets.Target("forward", 0.4, (2,), targets._vs(case, 2, "fastnorm", ["torch"])),
            targets.Target(
                "backward", 0.4, (1,), functools.partial(targets._small_backward_ratio, "rms_norm")
            ),
        ],
        repeats=1,
    )
    assert [value for _, value in rows] == [None, None]
    buf = io.StringIO()
    targets.report(rows, file=buf)
    lines = buf.getvalue().splitlines()
    assert all("n/a" in line and "not installed" in line for line in lines[1:3]), lines
    assert lines[-1] == "0 of 2 targets met"


@pytest.mark.parametrize(
    "flags, make",
    [
        ([], lambda: targets.forward_targets() + targets.roof_references()),
        (["--backward"], lambda: targets.backward_targets() + targets.roof_references()),
        (["--fused"], lambda: targets.fused_targets() + targets.roof_references()),
        (["--spellings"], lambda: targets.spelling_targets()),
        (
            ["--dtype", "float16"],
            lambda: targets.half_targets("float16") + targets.roof_references(),
        ),
        (
            ["--fused", "--threads", "2"],
            lambda: targets.select(targets.fused_targets() + targets.roof_references(), [2]),
        ),
    ],
    ids=["forward", "backward", "fused", "spellings", "float16", "fused-2-threads"],
)
def test_cli_flags_measure_the_set_they_name(flags, make, monkeypatch):
    measured = []

    def record(selected, repeats=21, progress=None):
        measured.append(([t.name for t in selected], [t.threads for t in selected], repeats))
        return [(t, None) for t in selected]

    monkeypatch.setattr(targets, "measure", record)
    monkeypatch.setattr(targets, "report", lambda rows: None)
    monkeypatch.setattr(targets.harness, "header", lambda: "")
    assert targets.main([*flags, "--repeats", "3"]) == 0
    expected = make()
    assert measured == [([t.name for t in expected], [t.threads for t in expected], 3)]


def test_cli_hands_the_torch_targets_its_settings(monkeypatch):
    pytest.importorskip("torch")
    import targets_torch

    got = []
    monkeypatch.setattr(targets_torch, "main", lambda *args: got.append(args) or 0)
    assert targets.main(["--torch", "--repeats", "5", "--threads", "1"]) == 0
    assert got == [(5, None, [1])]


@pytest.mark.slow
def test_script_prints_every_selected_target():
    """The fused targets (the quickest set) on the scalar kernels."""
    isa = fastnorm.available_isas()[-1]
    out = run_script("--fused", "--repeats", "1", "--isa", isa)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("fastnorm ") and f"kernels {isa}" in lines[0]
    rows = [line for line in lines if line.startswith("add_")]
    names = [t.name for t in targets.fused_targets()]
    assert len(rows) == len(names) and all(r.startswith(n) for r, n in zip(rows, names)), rows
    assert all(r.endswith(("yes", "NO")) for r in rows), rows
    # the bus's own 2-thread scaling, printed and not counted as a target
    reference = [line for line in lines if line.startswith("reference: streaming copy")]
    assert len(reference) == 1 and reference[0].endswith("(reference)"), lines
    assert lines[-1].endswith(f"of {len(names)} targets met")


@pytest.mark.parametrize(
    "bad", [["--repeats", "0"], ["--isa", "sse9"], ["--threads", "x"], ["--fused", "--backward"]]
)
@pytest.mark.slow
def test_script_rejects_bad_arguments(bad):
    out = run_script(*bad, timeout=60)
    assert out.returncode == 2 and "error" in out.stderr, (bad, out.stderr)


@pytest.mark.slow
def test_package_cli_points_at_the_script():
    out = subprocess.run(
        [sys.executable, "-m", "fastnorm", "bench", "--targets"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "benchmarks/targets.py" in out.stderr, out.stderr


# ---- the Dask targets -------------------------------------------------------


def test_dask_targets_divide_one_timing_run_per_op(monkeypatch):
    """Each op's two Dask targets share one timing run (the run is not
    repeated for the second) and divide fastnorm's time by Dask's own
    expression and by the identity pass."""
    pytest.importorskip("dask.array")
    from fastnorm.bench import dask_cases

    runs = []

    def measure(op, repeats, names):
        runs.append(op)
        return {"fastnorm": 1.0, "dask": 4.0, "identity": 0.5}

    monkeypatch.setattr(dask_cases, "measure", measure)
    ratios = [t.measure(repeats=3) for t in targets.dask_targets()]
    assert sorted(runs) == ["layer_norm", "rms_norm"]
    assert ratios == [0.25, 2.0, 0.25, 2.0]


@pytest.mark.slow
def test_package_cli_bench_dask_rejects_other_sets():
    pytest.importorskip("dask.array")
    out = subprocess.run(
        [sys.executable, "-m", "fastnorm", "bench", "--dask", "--fused"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "--dask takes" in out.stderr, out.stderr


# ---- the torch targets ------------------------------------------------------


def test_a_torch_target_is_met_by_a_right_result_within_its_goal():
    """A torch target is met by fastnorm / torch at most its goal, and never
    by a wrong result however fast; each has its own key."""
    pytest.importorskip("torch")
    import targets_torch

    assert len(targets_torch.TARGETS_BY_KEY) == len(targets_torch.TARGETS)
    for target in targets_torch.TARGETS:
        assert target.goal > 0 and target.threads in (1, 2), target.key

        def row(ratio, error=None, target=target):
            return types.SimpleNamespace(case=target, ratio=ratio, error=error)

        assert target.met(row(target.goal)) and not target.met(row(target.goal * 1.01))
        assert not target.met(row(target.goal / 10, error="WRONG RESULT"))


@pytest.mark.slow
def test_torch_script_prints_every_target():
    pytest.importorskip("torch")
    import targets_torch

    out = run_script("--torch", "--repeats", "1")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [
        line
        for line in out.stdout.splitlines()
        if line.startswith(("layer_norm ", "rms_norm ", "LayerNorm ", "RMSNorm "))
    ]
    assert len(lines) == len(targets_torch.TARGETS), out.stdout
    for case, line in zip(targets_torch.TARGETS, lines):
        assert line.startswith(case.label), (case.label, line)
        assert f"<= {case.goal}" in line and line.rstrip().endswith(("yes", "NO")), line
    assert f"kernels {fastnorm.get_isa()}" in out.stdout
    assert "CPU: " in out.stdout and f"of {len(targets_torch.TARGETS)} targets met" in out.stdout


def test_a_wrong_torch_result_is_reported_not_timed(monkeypatch):
    """The harness must be able to fail: break fastnorm.torch.layer_norm and
    its targets say WRONG RESULT (and are not met) while the others still
    run, and the script's status is 1."""
    pytest.importorskip("torch")
    import targets_torch

    import fastnorm.torch as fnt
    from fastnorm.torch import _functions

    real = fnt.layer_norm
    for module in (fnt, _functions):  # the package's name, and the modules' one
        monkeypatch.setattr(module, "layer_norm", lambda *a, **k: real(*a, **k) * 1.001)
    cases = [
        targets_torch.TARGETS_BY_KEY["ln_fn_small"],
        targets_torch.TARGETS_BY_KEY["rms_fn_small"],
    ]
    monkeypatch.setattr(targets_torch, "TARGETS", cases)
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    assert targets.main(["--torch", "--repeats", "1"]) == 1
    text = buf.getvalue()
    lines = [line for line in text.splitlines() if line.startswith(("layer_norm ", "rms_norm "))]
    assert "WRONG RESULT" in lines[0] and "WRONG RESULT" not in lines[1], lines
    assert "targets met" in text.splitlines()[-1] and not text.splitlines()[-1].startswith("2 ")
