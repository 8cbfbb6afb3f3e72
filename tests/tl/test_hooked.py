"""The HookedRootModule surface (nnsight_rnn.tl.HookedLM) on every family of tests/families.py.

Checks: idle model == untouched HF model and nothing installed; every hook (and alias) fires with a
position axis where ``pos_dim`` says; ``run_with_cache`` state values == what the nnsight surface
reads; ``names_filter`` forms; expensive states computed only when asked; backward hooks and gradients;
edit semantics of state hooks; hooks during ``generate``; ``stop_at_layer``; losses; tokens.
"""

from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("transformer_lens", reason="the TransformerLens surface needs transformer-lens installed")

from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint as TLHookPoint

import nnsight_rnn
import nnsight_rnn.tl as tl
from nnsight_rnn.hooks import HookPoint as RNNHookPoint

from ..families import FAMILIES, RECURRENT, STATE_HOOKS

ALL = [*RECURRENT, "gpt2"]


@pytest.fixture(params=ALL)
def family(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=RECURRENT)
def recurrent(request: pytest.FixtureRequest) -> str:
    return request.param


def _ids(batch: int = 2, length: int = 8) -> torch.Tensor:
    return torch.randint(0, 257, (batch, length))


def _reference(family: str) -> torch.nn.Module:
    """The untouched HF model. RWKV-4 in train mode: stock eval mode rescales the residual (see its card)."""
    ref = FAMILIES[family]()
    return ref.train() if family == "rwkv4" else ref


def _torch_hooks(module: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules())


def test_is_a_hooked_root_module_and_idle_model_is_untouched(family: str) -> None:
    ref = _reference(family)
    model = tl.load(copy.deepcopy(ref).eval())
    assert isinstance(model, HookedRootModule)
    assert all(isinstance(p, TLHookPoint) for p in model.hook_dict.values())
    assert set(model.hf_model.state_dict()) == set(ref.state_dict())
    assert {k.removeprefix("hf_model.") for k in model.state_dict()} == set(ref.state_dict())
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(model(ids), ref(ids).logits, atol=1e-5, rtol=0)
        hooks_before = _torch_hooks(model.hf_model)
        model.run_with_cache(ids)
        model.run_with_hooks(ids, fwd_hooks=[(lambda n: True, lambda x, hook: None)])
    # Bridges come and go with the TransformerLens hooks: nothing left behind.
    assert _torch_hooks(model.hf_model) == hooks_before
    assert not any(p.is_linked() for p in model.hook_points())


def test_names_follow_transformer_lens(family: str) -> None:
    model = tl.load(FAMILIES[family]())
    n = model.cfg.n_layers
    names = set(model.hook_dict)
    for i in range(n):
        for leaf in ("hook_resid_pre", "hook_mixer_in", "hook_mixer_out", "hook_resid_post"):
            assert f"blocks.{i}.{leaf}" in names
    assert {"hook_embed", "ln_final.hook_normalized", "hook_unembed"} <= names
    aliases = set(model.hook_names(include_aliases=True)) - names
    assert {"blocks.0.hook_in", "blocks.0.hook_out", "blocks.0.mixer.hook_in", "blocks.0.mixer.hook_out"} <= aliases
    if family in STATE_HOOKS:
        write, readout, carried = STATE_HOOKS[family]
        assert {f"blocks.1.mixer.{h}" for h in (write, readout, carried)} <= names
    if family in ("mamba", "mamba2"):  # TransformerBridge's SSM spellings
        assert {"blocks.0.mixer.hook_ssm_out", "blocks.0.mixer.hook_in_proj", "blocks.0.mixer.hook_h"} <= (
            names | aliases
        )
    with pytest.raises(tl.UnknownTLHookError, match="Nearest"):
        model.run_with_cache(_ids(), names_filter=["blocks.1.hook_resid_postt"])


def test_every_hook_and_alias_fires_with_pos_dim(family: str) -> None:
    model = tl.load(FAMILIES[family]())
    ids = _ids(2, 7)
    every = model.hook_names(include_aliases=True)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=every)
    assert set(cache) == set(every), set(every) - set(cache)
    for name in every:
        point = model.mod_dict[name]
        assert hasattr(point, "pos_dim"), name
        if point.pos_dim is not None:
            assert point.pos_dim == 1 and cache[name].shape[:2] == (2, 7), (name, cache[name].shape)
        else:
            assert point.kind in ("state_carried", "activation") and 7 not in cache[name].shape[1:2], name
        alias_of = point.alias_of
        if alias_of is not None and name.endswith("_flat"):
            assert torch.equal(cache[name], cache[alias_of].flatten(2)), name
        elif alias_of is not None:
            assert torch.equal(cache[name], cache[alias_of]), name


def test_state_cache_equals_nnsight_surface(recurrent: str) -> None:
    """run_with_cache on state hooks returns [batch, pos, ...] equal to what nnsight reads, bit for bit."""
    ref = FAMILIES[recurrent]()
    model = tl.load(copy.deepcopy(ref))
    nn_model = nnsight_rnn.load(copy.deepcopy(ref))
    ids = _ids(2, 9)
    write, readout, carried = STATE_HOOKS[recurrent]
    hooks = (carried, write, readout)  # execution order: nnsight reads hooks in the order they fire
    names = [f"blocks.{i}.mixer.{h}" for i in range(model.cfg.n_layers) for h in hooks]
    with torch.no_grad():
        logits, cache = model.run_with_cache(ids, names_filter=names)
        saved = {}
        with nn_model.trace(ids):
            for i in range(model.cfg.n_layers):
                for h in hooks:
                    saved[f"blocks.{i}.mixer.{h}"] = nn_model.layers[i].mixer.get(h).output.save()
            nn_logits = nn_model.output.logits.save()
    assert torch.equal(logits, nn_logits)
    for name in names:
        assert torch.equal(cache[name], saved[name]), name
    assert cache[f"blocks.1.mixer.{readout}"].shape[:2] == (2, 9)
    assert cache[f"blocks.1.mixer.{write}"].shape[:2] == (2, 9)


def test_shared_instance_with_nnsight(recurrent: str) -> None:
    """tl.load(nnsight model) shares the module: nnsight names keep working next to TL hooks."""
    nn_model = nnsight_rnn.load(FAMILIES[recurrent]())
    model = tl.load(nn_model)
    assert model.hf_model is nn_model._module
    _, readout, _ = STATE_HOOKS[recurrent]
    ids = _ids(1, 6)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=[f"blocks.2.mixer.{readout}"])
        with nn_model.trace(ids):
            resid = nn_model.layers[1].output.save()
            h = nn_model.layers[2].mixer.get(readout).output.save()
        _, cache2 = model.run_with_cache(ids, names_filter=["blocks.1.hook_resid_post"])
    assert torch.equal(cache[f"blocks.2.mixer.{readout}"], h)
    assert torch.equal(cache2["blocks.1.hook_resid_post"], resid)


def test_names_filter_forms_and_lazy_states(recurrent: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tl.load(FAMILIES[recurrent]())
    write, readout, _ = STATE_HOOKS[recurrent]
    ids = _ids()
    computed: list[str] = []
    original = RNNHookPoint.fires

    def spy(self: RNNHookPoint) -> bool:
        result = original(self)
        if result:
            computed.append(self.name)
        return result

    monkeypatch.setattr(RNNHookPoint, "fires", spy)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter="blocks.1.hook_resid_post")
        assert list(cache) == ["blocks.1.hook_resid_post"]
        assert computed == []  # no per-position state was built
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith(readout))
        assert sorted(cache) == [f"blocks.{i}.mixer.{readout}" for i in range(3)]
        assert sorted(computed) == [f"layers.{i}.mixer.{readout}" for i in range(3)]
        computed.clear()
        # An alias is cached under the name asked for; a predicate never sees aliases.
        alias = next(a for a, c in model.card.aliases.items() if c == readout)
        _, cache = model.run_with_cache(ids, names_filter=[f"blocks.0.mixer.{alias}", "blocks.0.hook_in"])
        assert set(cache) == {f"blocks.0.mixer.{alias}", "blocks.0.hook_in"}
        assert computed == [f"layers.0.mixer.{readout}"]
        _, cache = model.run_with_cache(ids, names_filter=lambda n: n.endswith(".hook_in"))
        assert cache == {}
        # pos_slice acts on each hook's own position axis; carried states are kept whole.
        carried = STATE_HOOKS[recurrent][2]
        names = [f"blocks.1.mixer.{write}", f"blocks.1.mixer.{carried}"]
        _, full = model.run_with_cache(ids, names_filter=names)
        _, last = model.run_with_cache(ids, names_filter=names, pos_slice=-1)
        assert torch.equal(last[names[0]], full[names[0]][:, -1:])  # TL keeps the axis for an int slice
        assert torch.equal(last[names[1]], full[names[1]])


def test_positions_selected(recurrent: str) -> None:
    model = tl.load(FAMILIES[recurrent]())
    _, readout, _ = STATE_HOOKS[recurrent]
    name = f"blocks.1.mixer.{readout}"
    ids = _ids(2, 9)
    with torch.no_grad():
        _, full = model.run_with_cache(ids, names_filter=[name])
        with model.positions_selected({name: [2, -1]}):
            _logits, some = model.run_with_cache(ids, names_filter=[name])
    assert some[name].shape[:2] == (2, 2)
    torch.testing.assert_close(some[name], full[name][:, [2, 8]], atol=1e-6, rtol=0)
    assert model.mod_dict[name].positions is None
    with pytest.raises(ValueError, match="not a per-position state hook"):
        model.mod_dict["blocks.1.hook_resid_pre"].positions = [1]


def test_gradients_and_backward_hooks(family: str) -> None:
    """incl_bwd caches d loss / d activation; parameter gradients equal the untouched model's."""
    ref = _reference(family)
    model = tl.load(copy.deepcopy(ref).eval())
    ids = _ids(2, 7)
    names = ["blocks.1.hook_resid_post", "blocks.0.hook_mixer_out"]
    if family in STATE_HOOKS:
        names.append(f"blocks.1.mixer.{STATE_HOOKS[family][1]}")
    loss, cache = model.run_with_cache(ids, names_filter=names, return_type="loss", incl_bwd=True)
    ref_loss = tl.hooked.lm_cross_entropy(ref(ids).logits, ids)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=0)
    ours = dict(model.hf_model.named_parameters())
    for pname, p in ref.named_parameters():
        if p.grad is not None:  # relative to the tensor's largest gradient (RWKV's embedding grads reach ~500)
            err = (ours[pname].grad - p.grad).abs().max()
            assert err <= 1e-6 * p.grad.abs().max() + 1e-7, (pname, err)
    # The cached gradient is d loss / d value: check it against autograd on the retained value.
    kept: dict[str, torch.Tensor] = {}

    def keep(value: torch.Tensor, hook) -> torch.Tensor:
        # A fresh node (Mamba-2 adds readout(hooked) - readout(unhooked): the same object in both would cancel).
        value = value.clone()
        value.retain_grad()
        kept[hook.name] = value
        return value

    loss2 = model.run_with_hooks(ids, fwd_hooks=[(n, keep) for n in names], return_type="loss")
    loss2.backward()
    for name in names:
        assert cache[name + "_grad"].shape == cache[name].shape
        torch.testing.assert_close(cache[name + "_grad"], kept[name].grad, atol=1e-7, rtol=1e-5, msg=name)
        assert cache[name + "_grad"].abs().max() > 0, name


def test_backward_hook_edits_gradient(family: str) -> None:
    """A bwd hook that zeroes the gradient at block 1's input zeroes it at block 0's output, not after."""
    model = tl.load(FAMILIES[family]())
    ids = _ids(2, 7)
    model.add_hook("blocks.1.hook_resid_pre", lambda grad, hook: torch.zeros_like(grad), dir="bwd")
    names = ["blocks.0.hook_resid_post", "blocks.2.hook_resid_pre"]
    _, cache = model.run_with_cache(ids, names_filter=names, return_type="loss", incl_bwd=True)
    model.reset_hooks()
    assert cache["blocks.0.hook_resid_post_grad"].abs().max() == 0
    assert cache["blocks.2.hook_resid_pre_grad"].abs().max() > 0
    assert not any(p.is_linked() for p in model.hook_points())
    _, cache = model.run_with_cache(ids, names_filter=names, return_type="loss", incl_bwd=True)
    assert cache["blocks.0.hook_resid_post_grad"].abs().max() > 0  # the hook is gone


def test_state_hook_edit_semantics(recurrent: str) -> None:
    """Through run_with_hooks: a write edit at t propagates (>= t), a readout edit stays at t (mixer output)."""
    model = tl.load(FAMILIES[recurrent]())
    write, readout, _ = STATE_HOOKS[recurrent]
    ids, t = _ids(2, 10), 5

    def zero_at_t(value, hook):
        value[:, t] = 0
        return value

    def scale_at_t(value, hook):
        value[:, t] = value[:, t] * 3 + 1
        return value

    with torch.no_grad():
        base, cache = model.run_with_cache(ids, names_filter=["blocks.1.hook_mixer_out"])
        edited = model.run_with_hooks(ids, fwd_hooks=[(f"blocks.1.mixer.{write}", zero_at_t)])
        _, cache2 = model.run_with_cache(ids, names_filter=["blocks.1.hook_mixer_out"])
        with model.hooks(fwd_hooks=[(f"blocks.1.mixer.{readout}", scale_at_t)]):
            _, readout_cache = model.run_with_cache(ids, names_filter=["blocks.1.hook_mixer_out"])
    diff = (edited - base).abs().amax(dim=(0, 2))
    assert torch.all(diff[:t] == 0) and torch.all(diff[t:] > 1e-6), diff
    assert torch.equal(cache["blocks.1.hook_mixer_out"], cache2["blocks.1.hook_mixer_out"])  # hooks were removed
    mixer_diff = (readout_cache["blocks.1.hook_mixer_out"] - cache["blocks.1.hook_mixer_out"]).abs().amax(dim=(0, 2))
    assert (mixer_diff > 0).nonzero().flatten().tolist() == [t], mixer_diff


def test_state_hooks_fire_during_generate(recurrent: str) -> None:
    model = tl.load(FAMILIES[recurrent]())
    write, readout, _ = STATE_HOOKS[recurrent]
    seen: list[tuple[int, ...]] = []
    ids = _ids(1, 5)
    with torch.no_grad(), model.hooks(fwd_hooks=[(f"blocks.2.mixer.{readout}", lambda v, hook: seen.append(v.shape))]):
        out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 9)
    assert [s[1] for s in seen] == [5, 1, 1, 1], seen  # prefill, then one call per decode step

    # An edit of the state write during decode step k changes the scores from step k on only.
    gen = dict(max_new_tokens=5, do_sample=False, output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        base = model.generate(ids, **gen)
        calls = {"n": 0}

        def blast(value, hook):
            calls["n"] += 1
            return value * 50 if calls["n"] == 3 else value  # call 3 = decode step 2 (prefill is step 0)

        with model.hooks(fwd_hooks=[(f"blocks.0.mixer.{write}", blast)]):
            edited = model.generate(ids, **gen)
    diffs = [(a - b).abs().max().item() for a, b in zip(edited.scores, base.scores, strict=True)]
    assert diffs[:2] == [0.0, 0.0] and min(diffs[2:]) > 1e-6, diffs
    assert torch.equal(edited.sequences[:, :7], base.sequences[:, :7])


def test_stop_at_layer_loss_and_strings(family: str) -> None:
    model = tl.load(FAMILIES[family]())
    ids = _ids(2, 6)
    with torch.no_grad():
        _, cache = model.run_with_cache(ids, names_filter=["blocks.2.hook_resid_pre", "blocks.2.hook_resid_post"])
        torch.testing.assert_close(model(ids, stop_at_layer=2), cache["blocks.2.hook_resid_pre"], atol=0, rtol=0)
        torch.testing.assert_close(model(ids, stop_at_layer=-1), cache["blocks.2.hook_resid_post"], atol=0, rtol=0)
        _, stopped = model.run_with_cache(ids, stop_at_layer=1)
        assert "blocks.0.hook_resid_post" in stopped and "blocks.1.hook_resid_pre" not in stopped
        _logits, per_token = model(ids, return_type="both", loss_per_token=True)
        assert per_token.shape == (2, 5)
        torch.testing.assert_close(per_token.mean(), model(ids, return_type="loss"), atol=1e-6, rtol=0)
        text = model(["hello world", "hi"])  # byte tokenizer, padded batch
        alone = model("hi")
    assert text.shape[:2] == (2, 11)
    assert model.to_string(model.to_tokens("hello")) == ["hello"]
    assert model.to_str_tokens("hi") == ["h", "i"]
    if family in RECURRENT:  # left padding is exact on recurrent cards
        torch.testing.assert_close(text[1, -2:], alone[0], atol=1e-5, rtol=0)
    with pytest.raises(IndexError, match="stop_at_layer"):
        model(ids, stop_at_layer=7)
