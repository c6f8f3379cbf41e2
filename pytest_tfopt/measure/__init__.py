"""Measurements: latency, accuracy and size."""
