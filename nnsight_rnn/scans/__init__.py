"""Recurrences in plain torch, one module per family. Position is axis 1 everywhere."""
