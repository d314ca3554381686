# Type stubs for the test and benchmark hooks (fastnorm/_testing.pyx).
import numpy as np
import numpy.typing as npt

# the portable float16/bfloat16 conversions ('f16' or 'bf16')
def software_narrow(kind: str, values: npt.ArrayLike) -> npt.NDArray[np.uint16]: ...
def software_widen(kind: str, bits: npt.ArrayLike) -> npt.NDArray[np.float32]: ...

# the streaming-copy roof
def stream_copy_isa() -> str: ...
def stream_copy(dst: np.ndarray, src: np.ndarray, threads: int = 1) -> None: ...

# the in-cache yardstick: textbook two-pass AVX2 norms
def plain_norm(
    op: str,
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    eps: float = 1e-5,
) -> None: ...
