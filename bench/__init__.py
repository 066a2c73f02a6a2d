"""Courier's benchmarks and load generator (DESIGN §11). Run ``python -m bench --help``."""
