"""Adapters to other tools' interfaces (each imports its tool only when used)."""
