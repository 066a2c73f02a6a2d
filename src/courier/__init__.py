"""Courier: reliable event delivery into immutable hourly buckets."""

__version__ = "0.1.0"
