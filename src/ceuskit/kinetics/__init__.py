"""Perfusion kinetics: bolus models, the batched fitter and curve descriptors."""
