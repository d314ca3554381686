"""An out-of-core pipeline: layer_norm of a Zarr array larger than memory.

    pip install ".[dask]"
    python examples/dask_zarr.py --gib 8 --dir /tmp/fastnorm-zarr

1. writes a float32 array of --gib GiB (rows of --cols values) to a Zarr
   store, block by block, from Dask's random generator;
2. normalizes it with fastnorm.layer_norm on the Dask array read back from
   that store (lazily: one fastnorm call per block);
3. writes the result to a second Zarr store (dask.array.to_zarr, the Dask
   way to say out=);
4. checks a few rows of the result, bit for bit, against in-memory fastnorm
   on the same rows read from the input store.

Only a few blocks are in memory at a time, whatever the size: the script
prints its peak resident memory (the process's, the threaded scheduler's
workers included) next to the size of the array and of one block.
"""

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np

# run this checkout's fastnorm when the script is run from it
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dask
import dask.array as da
import zarr

import fastnorm

MIB = 1 << 20


def peak_rss_bytes():
    """The peak resident set size of this process so far (Linux: KiB)."""
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return usage if sys.platform == "darwin" else usage * 1024


def run(gib=0.0625, cols=4096, chunk_rows=2048, folder=None, check_rows=8, quiet=False):
    """The pipeline on a (rows, cols) float32 array of about `gib` GiB, in
    chunks of (chunk_rows, cols); returns a dict of what it measured."""
    say = (lambda *a: None) if quiet else print
    rows = max(chunk_rows, int(gib * (1 << 30)) // (4 * cols) // chunk_rows * chunk_rows)
    owned = folder is None
    folder = tempfile.mkdtemp(prefix="fastnorm-zarr-") if owned else folder
    src, dst = os.path.join(folder, "x.zarr"), os.path.join(folder, "y.zarr")
    for path in (src, dst):
        shutil.rmtree(path, ignore_errors=True)
    rng = np.random.default_rng(0)
    weight = rng.standard_normal(cols).astype(np.float32)
    bias = rng.standard_normal(cols).astype(np.float32)
    baseline = peak_rss_bytes()  # the interpreter with numpy, dask, zarr, fastnorm
    try:
        start = time.perf_counter()
        # 1. the input, written block by block (never whole in memory);
        # uncompressed: random floats do not compress, and the point is the I/O
        chunks = (chunk_rows, cols)
        x = da.random.default_rng(1).standard_normal((rows, cols), chunks=chunks, dtype=np.float32)
        da.to_zarr(x * 3 + 1, src, compressors=None)
        written = time.perf_counter()

        # 2-3. normalize the store's array and write the result to another store
        x = da.from_zarr(src)
        y = fastnorm.layer_norm(x, weight=weight, bias=bias)
        da.to_zarr(y, dst, compressors=None)
        normalized = time.perf_counter()

        # 4. a few rows, bit for bit against in-memory fastnorm
        picks = np.unique(np.linspace(0, rows - 1, check_rows).astype(int))
        x_in, y_out = zarr.open_array(src, mode="r"), zarr.open_array(dst, mode="r")
        for r in picks:
            want = fastnorm.layer_norm(x_in[r : r + 1], weight=weight, bias=bias)
            np.testing.assert_array_equal(y_out[r : r + 1], want)
        nbytes = rows * cols * 4
        result = {
            "shape": (rows, cols),
            "array_bytes": nbytes,
            "block_bytes": chunk_rows * cols * 4,
            "peak_rss_bytes": peak_rss_bytes(),
            "baseline_rss_bytes": baseline,
            "write_seconds": written - start,
            "normalize_seconds": normalized - written,
            "rows_checked": len(picks),
        }
        say(f"array {rows} x {cols} float32 = {nbytes / MIB:.0f} MiB in blocks of "
            f"{chunk_rows} x {cols} = {result['block_bytes'] / MIB:.0f} MiB")  # fmt: skip
        rate = 2 * nbytes / MIB / result["normalize_seconds"]
        say(f"write input {result['write_seconds']:.1f} s, layer_norm to Zarr "
            f"{result['normalize_seconds']:.1f} s ({rate:.0f} MiB/s read + written)")  # fmt: skip
        say(f"{len(picks)} rows checked bit for bit against in-memory fastnorm")
        above = result["peak_rss_bytes"] - baseline
        say(f"peak RSS {result['peak_rss_bytes'] / MIB:.0f} MiB: {baseline / MIB:.0f} MiB after "
            f"the imports, + {above / MIB:.0f} MiB = {above / result['block_bytes']:.1f} blocks "
            "for the pipeline")  # fmt: skip
        return result
    finally:
        if owned:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=0.0625, help="array size in GiB")
    parser.add_argument("--cols", type=int, default=4096, help="normalized row length")
    parser.add_argument("--chunk-rows", type=int, default=2048, help="rows per block")
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temp dir)")
    parser.add_argument("--scheduler", default="threads", help="dask scheduler")
    args = parser.parse_args(argv)
    with dask.config.set(scheduler=args.scheduler):
        run(args.gib, args.cols, args.chunk_rows, args.dir)


if __name__ == "__main__":
    main()
