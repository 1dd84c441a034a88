"""Perfusion kinetics: models, the batched fitter and curve descriptors.

- `models`: lognormal, gamma-variate, LDRW and replenishment models (formula,
  analytic Jacobian, starting point, bounds, closed forms).
- `fit`: `fit_curves`, the batched Levenberg-Marquardt fitter, and the
  enhancement test.
- `fit_numba`, `prefit_numba`: their compiled parts (the iteration; the
  screening, starting point and quality-of-fit sums).
- `descriptors`: the one definition of every perfusion parameter.
- `fast`: the same descriptors from closed forms (parametric maps).
- `select`: `fit_auto`, per-curve model selection by AICc.
- `model_free`: the descriptors of the smoothed measured curve.
"""
