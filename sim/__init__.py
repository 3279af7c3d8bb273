"""Simulation infrastructure: Verilog emission, cocotb runners, stream drivers and monitors.

Shared by the Amaranth-simulator unit tests and the cocotb integration tests, so
both pack and unpack payloads through the same layouts and draw the same
seeded input gaps and backpressure.
"""
