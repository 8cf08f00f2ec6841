"""Bound propagation in torch."""
