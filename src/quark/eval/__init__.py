"""Measuring models: task accuracy by exact match of generated answers."""
