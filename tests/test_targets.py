"""The project's speed targets (benchmarks/targets.py and
benchmarks/targets_torch.py, outside the package): every target is there
with its goal, the script runs and prints each one, and the torch harness
reports a wrong result instead of timing it.  No timing is asserted: speed
is measured, never unit-tested."""

import io
import os
import subprocess
import sys

import pytest

pytest.importorskip("threadpoolctl")

import fastnorm

pytestmark = pytest.mark.any_isa

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
SCRIPT = os.path.join(BENCHMARKS, "targets.py")
sys.path.insert(0, BENCHMARKS)
import targets  # noqa: E402

BIG = (4096, 4096)


def run_script(*args, timeout=600):
    out = subprocess.run(
        [sys.executable, SCRIPT, *args], capture_output=True, text=True, timeout=timeout
    )
    return out


def goals(target_list):
    return [(t.name, t.goal, t.threads, t.higher_is_better) for t in target_list]


def both(name, goal, higher=False):
    """A target's rows on 1 and 2 threads ("{t}" in the name)."""
    return [
        (name.format(t="1 thread"), goal, (1,), higher),
        (name.format(t="2 threads"), goal, (2,), higher),
    ]


def test_forward_targets_and_goals():
    """The goals against the streaming-copy roof, each target on 1
    and 2 threads."""
    assert goals(targets.forward_targets()) == [
        *both("layer_norm f32 (4096, 4096) out= {t} / streaming-copy roof", 1.15),
        *both(
            "layer_norm f32 (4096, 4096) out= without weight and bias, {t} / streaming-copy roof",
            1.15,
        ),
        *both("rms_norm f32 (4096, 4096) out= {t} / streaming-copy roof", 1.10),
        *both(
            "rms_norm f32 (4096, 4096) out= without weight and bias, {t} / streaming-copy roof",
            1.10,
        ),
        *both("layer_norm f32 (4096, 4096) out= / allocating, {t}", 1.0),
        *both("rms_norm f32 (4096, 4096) out= / allocating, {t}", 1.0),
        *both("layer_norm f32 (4096, 4096) allocating {t} / torch", 0.3),
        *both("rms_norm f32 (4096, 4096) allocating {t} / torch", 0.1),
        *both("numpy layer_norm / fastnorm, f32 (4096, 4096) {t}", 10.0, True),
        ("layer_norm f32 (8, 768) / torch", 0.4, (2,), False),
        ("rms_norm f32 (8, 768) / torch", 0.2, (2,), False),
        ("layer_norm f32 (8, 768) out= / np.add(x, b, out=)", 2.5, (2,), False),
        ("layer_norm f32 (512, 4096) 2 threads / 1 thread", 0.6, (1, 2), False),
        ("rms_norm f32 (512, 4096) 2 threads / 1 thread", 0.6, (1, 2), False),
        *both("layer_norm f64 (4096, 4096) out= {t} / streaming-copy roof", 1.5),
        *both("rms_norm f64 (4096, 4096) out= {t} / streaming-copy roof", 1.5),
        *both("layer_norm f32 (16, 256, 64, 64) axis=1 out= {t} / streaming-copy roof", 1.3),
        *both("rms_norm f32 (16, 256, 64, 64) axis=1 out= {t} / streaming-copy roof", 1.3),
    ]
    assert len(targets.forward_targets()) == targets.TARGET_COUNT


def test_half_backward_and_fused_targets_and_goals():
    assert goals(targets.half_targets("bfloat16")) == [
        *both("layer_norm bfloat16 (4096, 4096) out= {t} / streaming-copy roof", 1.2),
        *both("rms_norm bfloat16 (4096, 4096) out= {t} / streaming-copy roof", 1.2),
        *both("layer_norm bfloat16 (4096, 4096) allocating {t} / torch bfloat16", 0.3),
        *both("rms_norm bfloat16 (4096, 4096) allocating {t} / torch bfloat16", 0.1),
    ]
    ln_torch = "layer_norm_backward f32 (4096, 4096) {t} / torch native_layer_norm_backward"
    ln_roof = "layer_norm_backward f32 (4096, 4096) {t} / streaming-copy roof (1.5 x)"
    rms_torch = "rms_norm forward+backward f32 (4096, 4096) {t} / torch forward+autograd"
    rows = goals(targets.backward_targets())
    small = [
        (
            "layer_norm_backward f32 (8, 768) with saved stats 1 thread"
            " / torch native_layer_norm_backward",
            0.4,
            (1,),
            False,
        ),
        (
            "rms_norm_backward f32 (8, 768) with saved rstd 1 thread"
            " / torch autograd of F.rms_norm",
            0.2,
            (1,),
            False,
        ),
    ]
    assert sorted(rows) == sorted(
        both(ln_torch, 0.4) + both(ln_roof, 1.3) + both(rms_torch, 0.1) + small
    )
    fused = goals(targets.fused_targets())
    assert sorted(fused) == sorted(
        both("add_layer_norm f32 (4096, 4096) {t} / (np.add + layer_norm)", 0.75)
        + both("add_layer_norm f32 (4096, 4096) {t} / streaming-copy roof (2 x)", 1.25)
        + both("add_rms_norm f32 (4096, 4096) {t} / (np.add + rms_norm)", 0.75)
    )
    assert len(targets.half_targets()) == targets.HALF_TARGET_COUNT
    assert len(targets.backward_targets()) == targets.BACKWARD_TARGET_COUNT
    assert len(targets.fused_targets()) == targets.FUSED_TARGET_COUNT


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


def test_spelling_targets_cover_every_spelling_with_one_goal():
    """Every spelling of an (8, 768) call, half weights included,
    at most 1.2x the int form; each spelling computes the same result."""
    rows = goals(targets.spelling_targets())
    assert len(rows) == targets.SPELLING_TARGET_COUNT
    assert {(goal, threads, higher) for _, goal, threads, higher in rows} == {(1.2, (1,), False)}
    names = [name for name, *_ in rows]
    for op in ("layer_norm", "rms_norm"):
        for spelling in ("tuple", "axis=-1", "axis=(-1,)", "half weight", "tuple, half weight"):
            dtype = "bfloat16" if "half" in spelling else "float32"
            assert f"{op} {dtype} (8, 768) {spelling} / int form" in names


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
    selected = targets.select(targets.forward_targets(), [1])
    assert len(selected) == 13 and all(t.threads == (1,) for t in selected)
    assert len(targets.select(targets.forward_targets(), [1, 2])) == targets.TARGET_COUNT


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


def test_dask_targets_and_goals():
    pytest.importorskip("dask.array")
    chunked = "f32 (32768, 4096) Dask chunks (2048, 4096)"
    assert goals(targets.dask_targets()) == [
        (f"layer_norm {chunked} / Dask ops", 0.2, (2,), False),
        ("  the same / identity pass x.map_blocks(np.copy)", 1.1, (2,), False),
        (f"rms_norm {chunked} / Dask ops", 0.5, (2,), False),
        ("  the same / identity pass x.map_blocks(np.copy)", 1.1, (2,), False),
    ]
    assert len(targets.dask_targets()) == targets.DASK_TARGET_COUNT


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


def test_torch_targets_and_goals():
    """The eight torch targets, the bf16 one in both forms."""
    pytest.importorskip("torch")
    import targets_torch

    keys = {
        (c.op, c.form, c.shape, c.dtype, c.grad, c.threads, c.goal) for c in targets_torch.TARGETS
    }
    assert len(keys) == len(targets_torch.TARGETS) == 9
    assert keys == {
        ("layer_norm", "function", (8, 768), "float32", False, 1, 0.6),
        ("layer_norm", "module", (8, 768), "float32", False, 1, 0.5),
        ("rms_norm", "function", (8, 768), "float32", False, 1, 0.2),
        ("layer_norm", "function", (8, 768), "float32", True, 1, 1.0),
        ("layer_norm", "function", (4096, 4096), "float32", False, 2, 0.3),
        ("layer_norm", "function", (4096, 4096), "float32", True, 2, 0.5),
        ("rms_norm", "function", (4096, 4096), "float32", True, 2, 0.1),
        ("layer_norm", "function", (8, 4096), "bfloat16", False, 1, 0.7),
        ("layer_norm", "module", (8, 4096), "bfloat16", False, 1, 0.7),
    }


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
    assert "CPU: " in out.stdout and "of 9 targets met" in out.stdout


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
