"""Perfusion kinetics: models, the batched fitter and curve descriptors.

- `models`: lognormal, gamma-variate, LDRW and replenishment models (formula,
  analytic Jacobian, starting point, bounds, closed forms).
- `fit`: `fit_curves`, the batched Levenberg-Marquardt fitter, and the
  enhancement test.
- `descriptors`: the one definition of every perfusion parameter.
- `fast`: the same descriptors from closed forms (parametric maps).
- `select`: `fit_auto`, per-curve model selection by AICc.
- `model_free`: the descriptors of the smoothed measured curve.
"""
