"""Fused-kernel dispatch (nnsight_rnn.kernels, HookableMamba1Mixer._fused_forward), tested on CPU.

The real kernels need CUDA; here CPU stand-ins with mamba-ssm's signatures and semantics
(``selective_scan_ref``, ``causal_conv1d_ref`` and the two decode-step updates, written out below)
are forced in with :func:`nnsight_rnn.kernels.use_kernels`. What is tested is what nnsight-rnn owns:
which calls go fused, that they give the hookable path's outputs and states, that a wanted hook
always takes the hookable path (per layer), and that nnsight's step counting stays aligned.
The kernels themselves are checked against the hookable path on a GPU machine (docs/performance.md).
"""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

import nnsight_rnn
from nnsight_rnn import kernels

from .families import mamba


def _conv_fn(x, weight, bias=None, activation=None):  # causal_conv1d_fn: x [b, D, L], weight [D, K]
    out = F.conv1d(x, weight[:, None, :], bias, padding=weight.shape[1] - 1, groups=weight.shape[0])[..., : x.shape[-1]]
    return F.silu(out) if activation in ("silu", "swish") else out


def _conv_update(x, conv_state, weight, bias=None, activation=None):  # x [b, D], conv_state [b, D, K] in place
    conv_state.copy_(torch.cat([conv_state[..., 1:], x[..., None].to(conv_state.dtype)], dim=-1))
    out = (conv_state * weight).sum(-1) + (0 if bias is None else bias)
    return F.silu(out) if activation in ("silu", "swish") else out


def _scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False):
    delta = delta.float() + (0 if delta_bias is None else delta_bias[:, None])
    delta = F.softplus(delta) if delta_softplus else delta
    h = u.new_zeros(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float32)
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(delta[..., t, None] * A) * h + (delta[..., t] * u[..., t].float())[..., None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) + (0 if D is None else D[:, None] * u.float())
    y = y * F.silu(z.float()) if z is not None else y
    return (y, h) if return_last_state else y


def _state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):  # state in place
    dt = dt.float() + (0 if dt_bias is None else dt_bias)
    dt = F.softplus(dt) if dt_softplus else dt
    state.copy_(torch.exp(dt[..., None] * A) * state + (dt * x.float())[..., None] * B[:, None, :])
    y = (state * C[:, None, :]).sum(-1) + (0 if D is None else D * x.float())
    return y * F.silu(z.float()) if z is not None else y


class Recording:
    """CPU stand-ins that count their calls."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

        def counted(name, fn):
            def call(*args, **kwargs):
                self.calls[name] += 1
                return fn(*args, **kwargs)

            return call

        self.kernels = kernels.Mamba1Kernels(
            counted("conv", _conv_fn), counted("scan", _scan_fn), counted("step", _state_update),
            counted("conv_step", _conv_update),
        )  # fmt: skip


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return nnsight_rnn.load(mamba())  # 3 layers


def test_fused_prefill_and_decode_match_the_hookable_path(model):
    ids = torch.randint(0, 257, (2, 9))
    fake = Recording()
    with torch.no_grad():
        with kernels.use_kernels(mamba1=None):
            ref = model._module(input_ids=ids).logits
            ref_state = model.run_state(ids)
            ref_gen = model._module.generate(ids, max_new_tokens=4, do_sample=False)
        with kernels.use_kernels(mamba1=fake.kernels):
            out = model._module(input_ids=ids).logits
            state = model.run_state(ids)
            gen = model._module.generate(ids, max_new_tokens=4, do_sample=False)
    n_layers = len(model.layers)
    assert fake.calls["scan"] == fake.calls["conv"] > 0 and fake.calls["scan"] % n_layers == 0
    assert fake.calls["step"] == fake.calls["conv_step"] == 3 * n_layers  # 4 new tokens: 1 prefill + 3 steps
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    for a, b in zip(state.layers, ref_state.layers, strict=True):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)
    assert torch.equal(gen, ref_gen)


@pytest.mark.parametrize("name", ["hook_dt", "hook_conv_state_in"])  # per-position / carried-in
def test_a_wanted_hook_takes_the_hookable_path_for_its_layer_only(model, name):
    ids = torch.randint(0, 257, (1, 7))
    fake = Recording()
    seen = {}
    hook = getattr(model._module.backbone.layers[1].mixer, name)
    handle = hook.register_forward_hook(lambda m, i, o: seen.setdefault("value", o.clone()))
    try:
        with torch.no_grad(), kernels.use_kernels(mamba1=fake.kernels):
            out = model._module(input_ids=ids).logits
    finally:
        handle.remove()
    config = model._module.config
    shape = (1, 7, config.intermediate_size) if name == "hook_dt" else (1, config.intermediate_size, config.conv_kernel)
    assert seen["value"].shape == shape  # the hook fired ...
    assert fake.calls["scan"] == len(model.layers) - 1  # ... its layer ran the hookable path, the others fused
    with torch.no_grad(), kernels.use_kernels(mamba1=None):
        torch.testing.assert_close(out, model._module(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_nnsight_trace_and_generation_steps_with_fused_layers(model):
    ids = torch.randint(0, 257, (1, 6))
    fake = Recording()
    with torch.no_grad(), kernels.use_kernels(mamba1=fake.kernels):
        with model.trace(ids):
            resid = model.layers[0].output.save()
            state = model.layers[2].mixer.hook_ssm_state.output.save()  # expensive per-position hook
        assert fake.calls["scan"] == len(model.layers) - 1  # layer 2 ran hookable, 0 and 1 fused
        assert state.shape[:2] == (1, 6) and resid.shape[:2] == (1, 6)

        steps = 3
        with model.generate(ids, max_new_tokens=steps, min_new_tokens=steps, do_sample=False) as tracer:
            seen = list().save()
            for _ in tracer.iter[:steps]:
                seen.append(model.layers[1].mixer.hook_dt.output.shape[1])
    assert list(seen) == [6, 1, 1]  # one value per generation step, prompt first
    assert fake.calls["step"] > 0  # the layers nobody watched decoded fused


def test_padding_and_continuation_stay_on_the_hookable_path(model):
    fake = Recording()
    ids = torch.randint(0, 257, (2, 6))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    with torch.no_grad(), kernels.use_kernels(mamba1=fake.kernels):
        model._module(input_ids=ids, attention_mask=mask)
        state = model.run_state(ids[:, :3])
        model.run_state(ids[:, 3:], state=state)  # a 3-token prompt continuing a carried state
    assert fake.calls["scan"] == len(model.layers)  # only the fresh, unpadded prefix went fused


def test_kernels_are_never_imported_on_cpu_and_a_broken_install_is_not_fatal(monkeypatch):
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # "import mamba_ssm" now raises ImportError
    monkeypatch.setattr(kernels, "_cache", {})
    assert kernels.mamba1_kernels(torch.device("cpu")) is None
    assert "not probed" in kernels.kernel_status()["mamba1"]
    assert kernels.mamba1_kernels(torch.device("cuda")) is None  # import attempted, failed, remembered
    assert kernels.kernel_status()["mamba1"].startswith("unavailable: ")
    monkeypatch.setenv(kernels.FUSED_ENV, "0")
    monkeypatch.setattr(kernels, "_cache", {"mamba1": Recording().kernels})
    assert kernels.mamba1_kernels(torch.device("cuda")) is None  # switched off by the environment
    with pytest.raises(ValueError, match="known: \\['mamba1'\\]"):
        with kernels.use_kernels(rwkv4=None):
            pass


def test_cli_info_reports_the_fused_kernels(capsys):
    from nnsight_rnn.cli import main

    assert main(["info"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("fused GPU kernels"))
    assert ("no CUDA device" in line) != torch.cuda.is_available()
