"""Golden models: pure numpy, never imports Amaranth.

This package is the project's single arithmetic contract. Every RTL test
imports its expected values from here; nothing under ``tests/`` re-derives
numbers on its own.
"""
