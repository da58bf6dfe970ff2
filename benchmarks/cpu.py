"""CPU benchmark: ``python benchmarks/cpu.py [--json out.json]`` (the same as ``noiseshape bench``)."""

import sys

from noiseshape._bench import main

if __name__ == "__main__":
    sys.exit(main())
