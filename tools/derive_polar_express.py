"""Derive the orthogonalisation polynomials used by Muon in train.py.

Polar-express style (Amsel et al., 2025): after normalising G so that its singular values lie in
[lo, 1], each iteration applies the odd quintic p(x) = a x + b x^3 + c x^5 to the singular values
(X <- a X + b (X X^T) X + c (X X^T)^2 X). Step t uses the polynomial that minimises the worst
distance to 1 over the current interval [lo_t, hi_t] (a minimax fit, solved here as a linear
program on a dense grid), then the interval becomes [min p, max p] over it. A safety margin keeps
bf16 rounding from pushing singular values past the fitted interval.

Run: python tools/derive_polar_express.py   (needs scipy; not a dependency of the package)
"""

import numpy as np
from scipy.optimize import linprog

STEPS = 5
LO = 1e-3  # smallest singular value we aim to lift (relative to the largest)
SAFETY = 1.02  # fit on a slightly wider interval than the exact one (bf16 rounding)


def minimax_quintic(lo: float, hi: float) -> tuple[float, float, float]:
    x = np.geomspace(lo, hi, 4000)
    # variables a, b, c, e: minimise e subject to |1 - p(x_i)| <= e
    basis = np.stack([x, x**3, x**5], axis=1)
    A = np.vstack([np.hstack([-basis, -np.ones((len(x), 1))]), np.hstack([basis, -np.ones((len(x), 1))])])
    b = np.concatenate([-np.ones(len(x)), np.ones(len(x))])
    res = linprog([0, 0, 0, 1], A_ub=A, b_ub=b, bounds=[(None, None)] * 3 + [(0, None)], method="highs")
    a, bb, c, _ = res.x
    return a, bb, c


def main() -> None:
    lo, hi = LO, 1.0
    coeffs = []
    for _ in range(STEPS):
        a, b, c = minimax_quintic(lo / SAFETY, hi * SAFETY)
        coeffs.append((a, b, c))
        x = np.geomspace(lo / SAFETY, hi * SAFETY, 20000)
        p = a * x + b * x**3 + c * x**5
        lo, hi = p.min(), p.max()
        print(f"({a:.6f}, {b:.6f}, {c:.6f}),  # singular values now in [{lo:.4f}, {hi:.4f}]")


if __name__ == "__main__":
    main()
