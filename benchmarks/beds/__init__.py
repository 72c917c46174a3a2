"""Test beds: small models whose truth is known, to measure what the guidance methods do.

- gmm.py: a class-conditional Gaussian mixture with exact (posterior-mean) denoisers.
- digits.py: a small class-conditional diffusion model trained on scikit-learn's handwritten
  digits, with an evaluator CNN (evaluator.py) and the metrics (metrics.py).
Pure torch; comfy_models.py wraps them as ComfyUI models for the benchmark and host tests.
"""
