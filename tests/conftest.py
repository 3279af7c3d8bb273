"""Shared pytest configuration: the repository root is importable (see pyproject's pythonpath)."""
