"""Spatiotemporal video encoder, its feature cache, and the classifier baselines."""
