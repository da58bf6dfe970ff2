"""JAX benchmark: ``python benchmarks/jax.py [--json out.json]`` (the same as ``noiseshape bench --jax``)."""

import sys

from noiseshape._bench_jax import main

if __name__ == "__main__":
    sys.exit(main())
