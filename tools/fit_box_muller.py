"""The polynomial coefficients of csrc/vmath.h's Box-Muller, fitted in 50-digit arithmetic.

Each polynomial is a Chebyshev fit (``mpmath.chebyfit``, within a hair of the minimax one) on the
interval its argument reaches, rounded to float64; the fit's own error is printed beside it, far
below a float64 ulp of the result once scaled by what the polynomial contributes:

* ``cos r`` as a polynomial in ``w = r^2``, ``|r| <= pi / 4`` (a margin for the rounded reduction);
* ``(sin r - r) / r^3`` in ``w`` (``sin r = r + r w g(w)``), the same interval;
* ``4 (atanh(s) / s - 1) / s^2`` in ``z = s^2``, ``|s| <= (sqrt(2) - 1) / (sqrt(2) + 1)``: the
  doubled series ``R(z) / z`` of ``ln(1 + f) = 2 atanh(s)``, whose error reaches the logarithm
  multiplied by ``z s / 2 < 0.003``.

Run ``python tools/fit_box_muller.py`` (needs mpmath) to print the C arrays.
"""

import mpmath as mp

mp.mp.dps = 50

W_MAX = (mp.pi / 4) ** 2 * mp.mpf("1.001")
S_MAX = (mp.sqrt(2) - 1) / (mp.sqrt(2) + 1)
Z_MAX = S_MAX**2 * mp.mpf("1.0001")


def cos_w(w):
    return mp.cos(mp.sqrt(w))


def sin_g(w):
    if w == 0:
        return mp.mpf(-1) / 6
    r = mp.sqrt(w)
    return (mp.sin(r) - r) / r**3


def atanh_p2(z):
    if z == 0:
        return mp.mpf(4) / 3
    s = mp.sqrt(z)
    return 4 * (mp.atanh(s) / s - 1) / z


FITS = (("ns_bm_cos", cos_w, W_MAX, 7), ("ns_bm_sin", sin_g, W_MAX, 6), ("ns_bm_atanh2", atanh_p2, Z_MAX, 7))


def fitted():
    """``{name: (float64 coefficients, highest power first; the fit's maximum error)}``."""
    out = {}
    for name, f, top, n in FITS:
        poly, err = mp.chebyfit(f, [0, top], n, error=True)
        out[name] = ([float(c) for c in poly], float(err))
    return out


if __name__ == "__main__":
    for name, (coefs, err) in fitted().items():
        body = ", ".join(c.hex() for c in coefs)
        print(f"/* fit error {err:.1e} */\nstatic const double {name}[{len(coefs)}] = {{{body}}};")
