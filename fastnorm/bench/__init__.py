"""fastnorm's benchmarks for users: ``python -m fastnorm bench``.

harness      timing (interleaved rounds, medians), cases, competitors, the
             roof (a streaming copy; memcpy off x86-64)
torch_cases  fastnorm.torch against torch (needs torch)
dask_cases   fastnorm on Dask arrays against Dask's own expressions
cli          the command line of ``python -m fastnorm`` and its ``bench``

No runtime module of fastnorm imports this package.
"""
