"""noiseshape: shaped random noise (dropout with a ``noise_shape``) on one counter-based RNG."""
