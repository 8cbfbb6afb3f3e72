"""nnsight-rnn's adapters registered with TransformerLens's TransformerBridge (TransformerLens 4.x).

With the adapters registered, booting a Mamba / FalconMamba / Mamba-2 / RWKV-4 through the bridge
gives nnsight-rnn's state hooks with default arguments (no ``eager_scan``, no ``use_cache=False``),
firing during ``generate`` too, and RWKV-4 state hooks (the native bridge has none).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch

pytest.importorskip("transformer_lens.model_bridge", reason="TransformerBridge needs transformer-lens >= 4")

import nnsight_rnn
from nnsight_rnn.cards import get_card
from nnsight_rnn.tl.bridge import boot_bridge, register_bridge_adapters, unregister_bridge_adapters

from ..families import FAMILIES, RECURRENT, STATE_HOOKS

BRIDGED = [f for f in RECURRENT if get_card(f).tl_bridge is not None]  # cards with [tl.bridge]


@pytest.fixture
def registered() -> Iterator[None]:
    register_bridge_adapters()
    yield
    unregister_bridge_adapters()


@pytest.fixture(params=BRIDGED)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def _reference(family: str) -> torch.nn.Module:
    ref = FAMILIES[family]()
    return ref.train() if family == "rwkv4" else ref  # stock RWKV eval mode rescales (see its card)


def test_bridge_boots_with_state_hooks_and_hf_logits(registered: None, family: str) -> None:
    ref = _reference(family)
    bridge = boot_bridge(copy.deepcopy(ref).eval())
    write, readout, carried = STATE_HOOKS[family]
    for i in range(bridge.cfg.n_layers):
        for hook in (write, readout, carried):
            assert f"blocks.{i}.mixer.{hook}" in bridge.hook_dict
        assert f"blocks.{i}.hook_resid_post" in bridge.hook_dict
        assert bridge.hook_dict[f"blocks.{i}.mixer.{readout}"].pos_dim == 1
    ids = torch.randint(0, 257, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(bridge(ids), ref(ids).logits, atol=1e-5, rtol=0)


def test_state_cache_equals_nnsight_surface(registered: None, family: str) -> None:
    ref = FAMILIES[family]()
    bridge = boot_bridge(copy.deepcopy(ref))
    nn_model = nnsight_rnn.load(copy.deepcopy(ref))
    write, readout, _ = STATE_HOOKS[family]
    ids = torch.randint(0, 257, (2, 8))
    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids, names_filter=[f"blocks.1.mixer.{write}", f"blocks.1.mixer.{readout}"])
        with nn_model.trace(ids):
            w = nn_model.layers[1].mixer.get(write).output.save()
            r = nn_model.layers[1].mixer.get(readout).output.save()
    assert cache[f"blocks.1.mixer.{readout}"].shape[:2] == (2, 8)
    torch.testing.assert_close(cache[f"blocks.1.mixer.{write}"], w, atol=1e-6, rtol=0)
    torch.testing.assert_close(cache[f"blocks.1.mixer.{readout}"], r, atol=1e-6, rtol=0)


def test_write_patch_propagates_with_default_arguments(registered: None, family: str) -> None:
    """The TransformerBridge pitfall (state patch silently ignored without eager_scan / use_cache=False) is gone."""
    bridge = boot_bridge(FAMILIES[family]())
    write, _, _ = STATE_HOOKS[family]
    ids, t = torch.randint(0, 257, (2, 10)), 5

    def zero_at_t(value, hook):
        value[:, t] = 0
        return value

    with torch.no_grad():
        base = bridge(ids)
        edited = bridge.run_with_hooks(ids, fwd_hooks=[(f"blocks.1.mixer.{write}", zero_at_t)])
    diff = (edited - base).abs().amax(dim=(0, 2))
    assert torch.all(diff[:t] == 0) and torch.all(diff[t:] > 1e-6), diff


def test_state_hook_fires_during_generate(registered: None, family: str) -> None:
    bridge = boot_bridge(FAMILIES[family]())
    _, readout, _ = STATE_HOOKS[family]
    seen: list[int] = []
    ids = torch.randint(0, 257, (1, 5))
    hook = (f"blocks.1.mixer.{readout}", lambda value, hook: seen.append(value.shape[1]))
    with torch.no_grad(), bridge.hooks(fwd_hooks=[hook]):
        out = bridge.generate(ids, max_new_tokens=4, do_sample=False, verbose=False)
    assert out.shape == (1, 9)
    if family == "rwkv4":  # TransformerLens's RWKV loop re-runs the whole prefix each step
        assert seen == [5, 6, 7, 8], seen
    else:  # stateful loop: prefill, then one position per decode step
        assert seen == [5, 1, 1, 1], seen


def test_unregister_restores_native_adapters(family: str) -> None:
    from transformer_lens.factories.architecture_adapter_factory import ArchitectureAdapterFactory

    arch = type(FAMILIES[family]()).__name__
    native = ArchitectureAdapterFactory._adapters[arch]
    register_bridge_adapters()
    try:
        assert ArchitectureAdapterFactory._adapters[arch] is not native
        register_bridge_adapters()  # idempotent: the native class is remembered once
    finally:
        unregister_bridge_adapters()
    assert ArchitectureAdapterFactory._adapters[arch] is native
    bridge = boot_bridge(FAMILIES[family]())
    if family != "rwkv4":  # native Mamba bridges have hook_ssm_state but not our carried-state hooks
        assert "blocks.0.mixer.hook_ssm_state_in" not in bridge.hook_dict
