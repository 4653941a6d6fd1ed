"""Calibration runs: per-step conformal thresholds stored for serving."""
