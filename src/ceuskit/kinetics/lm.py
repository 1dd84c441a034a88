"""Constants of the batched Levenberg-Marquardt iteration.

Shared by the NumPy engine (`ceuskit.kinetics.fit`), the compiled one
(`ceuskit.kinetics.fit_numba`) and the PyTorch one
(`ceuskit.kinetics.fit_torch`), which must take the same steps: kept here so
that the engines import them from a module that imports none of them.
"""

from __future__ import annotations

#: Smallest damping; a step is never taken with less.
LAMBDA_MIN = 1e-15
#: Damping beyond this leaves no descent step: the curve counts as converged.
LAMBDA_MAX = 1e16
#: Relative floor of Marquardt's diagonal scaling (of the largest diagonal term).
DIAG_FLOOR = 1e-12
