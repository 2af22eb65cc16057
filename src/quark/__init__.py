"""Quark: a configuration-composed framework for developing language models."""

__version__ = "0.1.0"
