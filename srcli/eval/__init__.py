"""Evaluation: MATLAB-compatible metrics, data sets, published tables."""
