import os

# No GPU here: Triton kernels run in Triton's CPU interpreter. It must be chosen before Triton defines
# a kernel, so before any test module imports noiseshape.torch._triton (set it to 0 on a GPU machine).
os.environ.setdefault("TRITON_INTERPRET", "1")
