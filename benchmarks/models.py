"""Training steps of real models, torch's dropout vs noiseshape: ``python benchmarks/models.py [--sweep] [--json F]``.

The same as ``noiseshape bench --models``; with ``--sweep`` also the per-call size sweep.
"""

import sys

from noiseshape._bench import main

if __name__ == "__main__":
    sys.exit(main(["--models", *sys.argv[1:]]))
