"""Compiler + reference executor == the integer model, bit for bit, at every preset.

M3ViT-tiny (seeded weights), tiny_test and the two trained study models (log2 and
log-sqrt2 attention), both tasks where the model has two; random routings
including experts with no token and experts with every token; random execution
orders; and the errors: a model too large for the config, a race, a deadlock.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from golden.config import m3vit_small, m3vit_tiny, tiny_test
from golden.datasets import dataset
from golden.float_model import random_image
from golden.int_model import QuantParams, int_classify, int_forward, pixels_from_image
from golden.ptq import MIN_SAMPLES_PER_CHANNEL, calibrate
from golden.softmax import ATTENTION_CODES
from golden.weights import init_weights
from moevit.compiler import compile_model, head_groups, matrix_chunks, qkv_order
from moevit.executor import DeadlockError, Execution, RaceError, execute
from moevit.program import Instruction, Program, ProgramError
from rtl.config import PRESETS, AcceleratorConfig, AttentionArray, Capacity, LinearArray, preset
from rtl.control.isa import Opcode, Queue


def _quantized(cfg, seed, method="minmax", attention="log2"):
    calib = -(-MIN_SAMPLES_PER_CHANNEL // cfg.num_tokens) if method == "dual_stage" else 2
    images = [random_image(cfg, seed=seed + 1 + n) for n in range(calib + 1)]
    qp = calibrate(cfg, init_weights(cfg, seed=seed), images[:-1], method=method,
                   attention=attention)
    return qp, pixels_from_image(cfg, images[-1])


@pytest.fixture(scope="module")
def tiny():
    return _quantized(m3vit_tiny(), 3)


@pytest.fixture(scope="module")
def small_models():
    return {"tiny_test": _quantized(tiny_test(), 5, "dual_stage")}


def _check(qp, pixels, config, tasks=None):
    compiled = compile_model(qp, config.fitted(qp.config))
    reference = int_classify if qp.config.num_classes else int_forward
    for task in range(qp.config.num_tasks) if tasks is None else tasks:
        out, run = execute(compiled, pixels, task)
        assert np.array_equal(out, reference(qp, pixels, task)), f"task {task}"
    return compiled, run


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_m3vit_tiny_bit_exact_at_every_preset(tiny, name):
    qp, pixels = tiny
    compiled, run = _check(qp, pixels, preset(name))
    routes = [s for s in run.steps if "lengths" in s.info]
    assert len(routes) == len(qp.config.moe_blocks)
    # Only active experts' weights are fetched: one fc1 image group per active expert.
    fc1 = [s for s in run.steps if s.ins.op == Opcode.LOAD_MATRIX and s.expert is not None]
    chunks = len(matrix_chunks(compiled.config, 192, 384)) + len(matrix_chunks(compiled.config,
                                                                               384, 192))
    active = sum(sum(1 for n in r.info["lengths"] if n) for r in routes)
    assert len(fc1) == active * chunks


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_tiny_test_dual_stage_bit_exact_at_every_preset(small_models, name):
    qp, pixels = small_models["tiny_test"]
    _check(qp, pixels, preset(name))


def _study(name, attention, n_images=3):
    data = dataset(name)
    cfg = data.config()
    images, _ = data.load_split("calibration")
    calib = -(-MIN_SAMPLES_PER_CHANNEL // cfg.num_tokens)
    qp = calibrate(cfg, data.load_weights(), images[:calib], method="dual_stage",
                   attention=attention)
    test, _ = data.load_split("test")
    return qp, [pixels_from_image(cfg, im) for im in test[:n_images]]


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
@pytest.mark.parametrize("attention", ATTENTION_CODES)
def test_trained_study_models_bit_exact_at_every_preset(name, attention):
    qp, images = _study(name, attention)
    for preset_name in sorted(PRESETS):
        config = preset(preset_name).fitted(qp.config)
        config = dataclasses.replace(config, attention=dataclasses.replace(
            config.attention, codes=ATTENTION_CODES))
        compiled = compile_model(qp, config)
        for pixels in images:
            logits, _ = execute(compiled, pixels, 0)
            assert np.array_equal(logits, int_classify(qp, pixels, 0)), preset_name


def _route_all_to(qp, block, experts, task):
    """Gate of ``task`` in ``block``: zero weights, biases that rank ``experts`` first."""
    e = qp.config.num_experts
    bias = np.full(e, -(1 << 20))
    for rank, expert in enumerate(experts):
        bias[expert] = (1 << 20) - rank * (1 << 16)
    p = f"blocks.{block}.mlp.gate.{task}."
    qp.tensors[p + "weight"] = np.zeros_like(qp[p + "weight"])
    qp.tensors[p + "bias"] = bias.astype(np.int32)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**16), mode=st.sampled_from(["random", "one expert", "ties"]),
       order=st.one_of(st.none(), st.integers(0, 2**16)), config=st.sampled_from(sorted(PRESETS)))
def test_random_routings_bit_exact(small_models, seed, mode, order, config):
    base, pixels = small_models["tiny_test"]
    qp = QuantParams(base.config, dict(base.tensors))
    rng = np.random.default_rng(seed)
    cfg = qp.config
    for task in range(cfg.num_tasks):
        p = f"blocks.1.mlp.gate.{task}."
        if mode == "random":
            shape = qp[p + "weight"].shape
            qp.tensors[p + "weight"] = rng.integers(-127, 128, shape).astype(np.int8)
            qp.tensors[p + "bias"] = rng.integers(-(1 << 16), 1 << 16,
                                                  cfg.num_experts).astype(np.int32)
        elif mode == "one expert":           # every token to the same top-k; the rest get none
            _route_all_to(qp, 1, rng.permutation(cfg.num_experts)[:cfg.top_k], task)
        else:                                # all logits equal: ties go to the lowest experts
            qp.tensors[p + "weight"] = np.zeros_like(qp[p + "weight"])
            qp.tensors[p + "bias"] = np.zeros(cfg.num_experts, np.int32)
    compiled = compile_model(qp, preset(config).fitted(cfg))
    for task in range(cfg.num_tasks):
        out, run = execute(compiled, pixels, task, seed=order)
        _, trace = int_forward(qp, pixels, task, trace=True)
        assert np.array_equal(out, trace["blocks.1.out"])
        lengths = next(s.info["lengths"] for s in run.steps if "lengths" in s.info)
        assert lengths == tuple(np.bincount(trace["blocks.1.mlp.topk_idx"].ravel(),
                                            minlength=cfg.num_experts))
        if mode != "random":
            assert sorted(lengths)[-cfg.top_k:] == [cfg.num_tokens] * cfg.top_k


@pytest.mark.parametrize("model, config, message", [
    (m3vit_small(), preset("zcu102"), r"model 'm3vit_small' on config 'zcu102': embed_dim 384 "
                                      r"differs from capacity.dim = 192"),
    (dataclasses.replace(tiny_test(), top_k=3), preset("zcu102").fitted(tiny_test()),
     r"top_k 3 differs from capacity.top_k = 2, the size the units are built for"),
    (dataclasses.replace(tiny_test(), num_experts=16), preset("u280").fitted(tiny_test()),
     r"num_experts 16 differs from capacity.experts = 4"),
    (dataclasses.replace(tiny_test(), image_size=(16, 16 * 200)), preset("u280"),
     r"tokens 201 exceeds capacity.tokens = 129"),
    (m3vit_tiny(), preset("u280").fitted(tiny_test()),
     r"tokens 129 exceeds capacity.tokens = 7"),
    (dataclasses.replace(tiny_test(), expert_hidden=1024), preset("u280").fitted(tiny_test()),
     r"expert_hidden 1024 exceeds capacity.hidden = 768"),
    (dataclasses.replace(tiny_test(), num_heads=1), AcceleratorConfig(
        linear=LinearArray(pi=64, po=64, t=1), attention=AttentionArray(r=4, dp=64),
        capacity=Capacity(dim=32, head_dim=64, experts=4)),
     r"head_dim 32 differs from capacity.head_dim = 64"),
    (dataclasses.replace(tiny_test(), num_classes=10), preset("zcu102").fitted(tiny_test()),
     r"num_classes 10 exceeds capacity.classes = 0"),
])
def test_models_the_config_cannot_run_are_rejected(model, config, message):
    # The limits are checked from the model config alone, before any tensor is read.
    with pytest.raises(ProgramError, match=message):
        compile_model(QuantParams(model, {}), config)


def test_quantizations_the_hardware_does_not_implement_are_rejected():
    cfg = tiny_test()
    images = [random_image(cfg, seed=n) for n in range(3)]
    config = AcceleratorConfig().fitted(cfg)
    qp = calibrate(cfg, init_weights(cfg, seed=0), images, act_bits=6)
    with pytest.raises(ProgramError, match=r"runs 8-bit activations, the parameter set has "
                                           r"quant.act_bits = 6"):
        compile_model(qp, config)
    qp = calibrate(cfg, init_weights(cfg, seed=0), images, attention="sqrt2")
    with pytest.raises(ProgramError, match=r"uses sqrt2 attention codes, the config builds "
                                           r"attention.codes = \('log2',\)"):
        compile_model(qp, config)


@pytest.mark.parametrize("queue, index, flags, error, message", [
    # The store no longer waits for the compute queue's last write of X.
    (Queue.STORE, 0, {"pop_prev": False}, RaceError,
     r"race on buffer X: store\[0\] STORE_TENSOR reads it while .* may still access it"),
    # The compute queue's END waits for a token the load queue never pushes.
    (Queue.COMPUTE, -1, {"pop_prev": True}, DeadlockError,
     r"deadlock: compute\[\d+\] END waits for a token from the load queue"),
])
def test_broken_tokens_are_caught(small_models, queue, index, flags, error, message):
    qp, pixels = small_models["tiny_test"]
    compiled = compile_model(qp, preset("zcu102").fitted(qp.config))
    streams = dict(compiled.program.streams)
    stream = list(streams[queue])
    stream[index] = dataclasses.replace(stream[index], **flags)
    streams[queue] = tuple(stream)
    program = Program(streams, compiled.program.input_bytes, compiled.program.output_bytes)
    with pytest.raises(error, match=message):
        Execution(compiled.config, program, compiled.with_input(pixels))


def test_a_missing_sync_for_the_attention_unit_is_a_race(small_models):
    # Without the SYNC before proj, proj reads A while the attention unit may still write it.
    qp, pixels = small_models["tiny_test"]
    compiled = compile_model(qp, preset("zcu102").fitted(qp.config))
    stream = list(compiled.program.streams[Queue.COMPUTE])
    syncs = [k for k, ins in enumerate(stream) if ins.op == Opcode.SYNC and ins["attention"]]
    assert len(syncs) == qp.config.depth
    del stream[syncs[0]]
    stream.insert(len(stream) - 1, Instruction.make(Opcode.SYNC, attention=1))
    program = Program(compiled.program.streams | {Queue.COMPUTE: tuple(stream)},
                      compiled.program.input_bytes, compiled.program.output_bytes)
    with pytest.raises(RaceError, match=r"race on buffer A: compute\[\d+\] LINEAR reads it "
                                        r"while compute\[\d+\] ATTENTION may still access it"):
        Execution(compiled.config, program, compiled.with_input(pixels))


def test_attention_overlaps_the_next_head_groups_qkv(small_models):
    qp, pixels = small_models["tiny_test"]
    config = preset("zcu102").fitted(qp.config)
    m = qp.config
    group = head_groups(config, m)
    assert 1 <= group < m.num_heads            # at least two groups, so they overlap
    out, run = execute(compile_model(qp, config), pixels, 0)
    ops = [s.ins.op for s in run.steps if s.queue == Queue.COMPUTE]
    first = ops.index(Opcode.ATTENTION)
    assert ops[first + 1] == Opcode.LINEAR       # the next group's qkv runs beside it
    # Without overlap: one ATTENTION of all heads per block, the same output.
    plain, run = execute(compile_model(qp, config, overlap_attention=False), pixels, 0)
    assert np.array_equal(out, plain)
    assert sum(s.ins.op == Opcode.ATTENTION for s in run.steps) == m.depth
    assert head_groups(dataclasses.replace(config, share_buffers=True), m) == m.num_heads
    assert sorted(qkv_order(m.num_heads, m.head_dim)) == list(range(3 * m.embed_dim))


def test_bad_task_is_named(small_models):
    qp, pixels = small_models["tiny_test"]
    compiled = compile_model(qp, preset("zcu102").fitted(qp.config))
    with pytest.raises(ProgramError, match=r"task must be in \[0, 1\], got 2"):
        execute(compiled, pixels, 2)
