"""The neon kernels give the avx2 kernels' bits.

NEON holds 8 float32 (4 float64) lanes in two 128-bit registers and runs
the AVX2 walks' chains in the same order, rounding lane by lane as AVX2
does (src/simd_neon_f32.h), so every walk, dtype and op gives bit for bit
the same results on x86-64 (avx2) and on aarch64 (neon).  No machine runs
both, so this file keeps SHA-256 digests of avx2's results and checks the
kernel set in use against them: avx2 on x86-64, neon on aarch64 (CI runs
it under QEMU, .ci/aarch64).  The inputs come from NumPy's uniform doubles
(integer arithmetic and one multiply, no libm), so they are the same bits on
every machine.

After a deliberate change to the walks' arithmetic, print new digests on
an x86-64 machine with AVX2 and paste them below:

    FASTNORM_ISA=avx2 python tests/test_same_bits_neon_avx2.py
"""

import hashlib

import ml_dtypes
import numpy as np
import pytest

import fastnorm

SAME_BITS_AS_AVX2 = ("avx2", "neon")
DTYPES = {
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}


def _uniform(seed, shape, low, high, dtype):
    """Values in [low, high), rounded once to float32 and then to dtype."""
    u = np.random.default_rng(seed).random(shape)
    x = (low + (high - low) * u).astype(np.float32)
    return x.astype(dtype)


def _param_dtype(dtype):
    return np.float64 if dtype == np.float64 else np.float32


def _outputs(op, dtype_name, walk):
    """The arrays one (op, dtype, walk) case returns, in a fixed order."""
    dtype = DTYPES[dtype_name]
    pdt = _param_dtype(dtype)
    lm = op == "layer_norm"
    if walk == "rows":  # last axis; a long row crosses the chunk folds
        n = 5000 if dtype == np.float64 else 9000
        x = _uniform(1, (3, n), 90.0, 110.0, dtype)
        w, b = _uniform(2, n, 0.5, 1.5, pdt), _uniform(3, n, -1.0, 1.0, pdt)
        kw = {"bias": b} if lm else {}
        return getattr(fastnorm, op)(x, weight=w, return_stats=True, **kw)
    if walk == "rows_tail":  # a row of 4*VL blocks plus a masked part
        x = _uniform(4, (7, 77), -3.0, 5.0, dtype)
        return [getattr(fastnorm, op)(x, eps=0.0)]
    if walk == "channels_first":  # rows side by side, more than a chunk long
        x = _uniform(5, (2, 19, 20, 17), 0.0, 4.0, dtype)
        w, b = _uniform(6, 19, 0.5, 1.5, pdt), _uniform(7, 19, -1.0, 1.0, pdt)
        kw = {"bias": b} if lm else {}
        return getattr(fastnorm, op)(x, weight=w, axis=1, **kw)
    if walk == "fortran":
        x = np.asfortranarray(_uniform(8, (45, 300), 1e3, 1e3 + 1.0, dtype))
        return getattr(fastnorm, op)(x, return_stats=True)
    if walk == "backward":
        x = _uniform(9, (11, 1100), -2.0, 3.0, dtype)
        dy = _uniform(10, (11, 1100), -1.0, 1.0, dtype)
        w = _uniform(11, 1100, 0.5, 1.5, pdt)
        return getattr(fastnorm, op + "_backward")(dy, x, weight=w)
    if walk == "fused_add":
        x = _uniform(12, (4, 530), -1.0, 1.0, dtype)
        r = _uniform(13, (4, 530), 10.0, 12.0, dtype)
        w, b = _uniform(14, 530, 0.5, 1.5, pdt), _uniform(15, 530, -1.0, 1.0, pdt)
        kw = {"bias": b} if lm else {}
        return getattr(fastnorm, "add_" + op)(x, r, weight=w, **kw)
    if walk == "per_sample":
        x = _uniform(16, (3, 5, 200), -1.0, 1.0, dtype)
        w = _uniform(17, (3, 1, 200), 0.5, 1.5, pdt)
        kw = {"bias": _uniform(18, (3, 1, 200), -1.0, 1.0, pdt)} if lm else {}
        return [getattr(fastnorm, op)(x, weight=w, **kw)]
    raise ValueError(walk)


WALKS = ("rows", "rows_tail", "channels_first", "fortran", "backward", "fused_add", "per_sample")
CASES = [(op, d, w) for op in ("layer_norm", "rms_norm") for d in DTYPES for w in WALKS]


def digest(op, dtype_name, walk):
    h = hashlib.sha256()
    outs = _outputs(op, dtype_name, walk)
    for a in outs if isinstance(outs, (list, tuple)) else [outs]:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode() + a.view(np.uint8).tobytes())
    return h.hexdigest()[:24]


@pytest.mark.isas(*SAME_BITS_AS_AVX2)
@pytest.mark.parametrize("op,dtype_name,walk", CASES)
def test_bits_equal_avx2s(op, dtype_name, walk, isa):
    assert digest(op, dtype_name, walk) == AVX2_DIGESTS[f"{op} {dtype_name} {walk}"]


@pytest.mark.any_isa
def test_every_case_has_a_digest():
    assert sorted(AVX2_DIGESTS) == sorted(f"{op} {d} {w}" for op, d, w in CASES)


# avx2's results (printed by running this file with FASTNORM_ISA=avx2)
AVX2_DIGESTS = {
    "layer_norm float32 rows": "3dd8eecd302948476ef32d40",
    "layer_norm float32 rows_tail": "6b28449a5a076e55601e2b8f",
    "layer_norm float32 channels_first": "be8febab126652668f94a938",
    "layer_norm float32 fortran": "567b3dd0c09bd3e82543b18e",
    "layer_norm float32 backward": "442bec4e902770fffa21caa2",
    "layer_norm float32 fused_add": "e10a669ab15340184c05f882",
    "layer_norm float32 per_sample": "cb3b0e4babc1215e8a570e75",
    "layer_norm float64 rows": "5d69ce62238ea2bdb20708da",
    "layer_norm float64 rows_tail": "a5743606efd6eef32dabbc28",
    "layer_norm float64 channels_first": "4422ec8b6345d3b6f163163a",
    "layer_norm float64 fortran": "ffdcaf1fe3a28ecc7b39f48c",
    "layer_norm float64 backward": "257c7467bf802a0c24df06f5",
    "layer_norm float64 fused_add": "3bb26b3463e1d5a5f1d8153d",
    "layer_norm float64 per_sample": "7d19173adb13e39d02c971cf",
    "layer_norm float16 rows": "41aeef010e9c82662177b3dd",
    "layer_norm float16 rows_tail": "c9adb6fc24cca3b943964269",
    "layer_norm float16 channels_first": "cfc314d10835bb2a33a77450",
    "layer_norm float16 fortran": "806d18f838bc37b969069f2e",
    "layer_norm float16 backward": "06ff86c53a5d2fe441cd2af9",
    "layer_norm float16 fused_add": "a324d1d58cb4eabecb11d492",
    "layer_norm float16 per_sample": "f9c6d0467d95502cc92494ef",
    "layer_norm bfloat16 rows": "a7e7322356b9d46d5281520c",
    "layer_norm bfloat16 rows_tail": "dcdac9ed270b5568dbdf6cf3",
    "layer_norm bfloat16 channels_first": "d22c656a41b7e287305d8a29",
    "layer_norm bfloat16 fortran": "c2770fc51eebbeb795cf6ca4",
    "layer_norm bfloat16 backward": "160b3d3ff571ac609888610e",
    "layer_norm bfloat16 fused_add": "14e901fbe442b36081a979cb",
    "layer_norm bfloat16 per_sample": "90600b492f391f4223622912",
    "rms_norm float32 rows": "e6c4e88fa705a0afa320511d",
    "rms_norm float32 rows_tail": "7cc2b52ba0eabfe912340aef",
    "rms_norm float32 channels_first": "4c8ac71c25d90d48934b55a1",
    "rms_norm float32 fortran": "4bc27de55d2bed33612fb777",
    "rms_norm float32 backward": "2b250e00c04ee73f33b9fb14",
    "rms_norm float32 fused_add": "57b4425bfa12a48d24837a0d",
    "rms_norm float32 per_sample": "cf587e2e5f9c887e7bc98caf",
    "rms_norm float64 rows": "c1c36f2d1adf2a81df16469b",
    "rms_norm float64 rows_tail": "5659047909489f36651f228f",
    "rms_norm float64 channels_first": "4cef506ce36363c277855c14",
    "rms_norm float64 fortran": "afc3b71d13fb98d7f61853e9",
    "rms_norm float64 backward": "3453eb788617c43120d097c8",
    "rms_norm float64 fused_add": "fbf01117c5134ffadacc388c",
    "rms_norm float64 per_sample": "4f841098a77e7b689378e72d",
    "rms_norm float16 rows": "3d45c2cd3cadbd553a5418b7",
    "rms_norm float16 rows_tail": "213b7bc59bee281e80be6671",
    "rms_norm float16 channels_first": "4d5be96b96fbbffe030a180e",
    "rms_norm float16 fortran": "6bdef4dadfa142b057fa9b96",
    "rms_norm float16 backward": "e5f304d0bfcda8d44c6eea57",
    "rms_norm float16 fused_add": "b742a1441d5f70c828ead429",
    "rms_norm float16 per_sample": "d9921acc0d739a752dde4f7a",
    "rms_norm bfloat16 rows": "0f8959edbccba4a54605a658",
    "rms_norm bfloat16 rows_tail": "59480fa7b64fe06512c345f6",
    "rms_norm bfloat16 channels_first": "e700288e8a6a1b2d6048a261",
    "rms_norm bfloat16 fortran": "2e57f2ae6df259b404e13a76",
    "rms_norm bfloat16 backward": "26c5a556ce9970d6edbea52c",
    "rms_norm bfloat16 fused_add": "7696b288a819f604b5180284",
    "rms_norm bfloat16 per_sample": "c311cba642d34d29a25a86b7",
}


if __name__ == "__main__":
    assert fastnorm.get_isa() == "avx2", "run with FASTNORM_ISA=avx2 on an AVX2 machine"
    print("AVX2_DIGESTS = {")
    for case in CASES:
        print(f'    "{" ".join(case)}": "{digest(*case)}",')
    print("}")
