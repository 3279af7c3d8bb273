"""Amaranth RTL of the MoE-ViT accelerator. Every unit is a ``wiring.Component``."""
