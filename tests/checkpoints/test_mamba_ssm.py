"""Original mamba-ssm checkpoint folders (written here, in that layout) load with the same logits."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

import nnsight_rnn
from nnsight_rnn.checkpoints import detect_format
from nnsight_rnn.mixers import HookableMixer

from ..families import mamba, mamba2


def _write_mamba_ssm_folder(model: torch.nn.Module, folder, layer: str) -> None:
    cfg = model.config
    ssm_cfg: dict = {"layer": layer, "d_state": cfg.state_size, "d_conv": cfg.conv_kernel, "expand": cfg.expand}
    if layer == "Mamba1":
        ssm_cfg["dt_rank"] = cfg.time_step_rank
    else:
        ssm_cfg.update(headdim=cfg.head_dim, ngroups=cfg.n_groups, chunk_size=cfg.chunk_size)
    config = {
        "d_model": cfg.hidden_size, "d_intermediate": 0, "n_layer": cfg.num_hidden_layers,
        "vocab_size": cfg.vocab_size, "ssm_cfg": ssm_cfg, "attn_layer_idx": [], "attn_cfg": {},
        "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8,
        "tie_embeddings": bool(cfg.tie_word_embeddings),
    }  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    weights = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in model.state_dict().items()}
    torch.save(weights, folder / "pytorch_model.bin")


@pytest.mark.parametrize(("factory", "layer"), [(mamba, "Mamba1"), (mamba2, "Mamba2")])
def test_original_folder_loads_with_equal_logits(tmp_path, factory, layer):
    ref = factory()
    _write_mamba_ssm_folder(ref, tmp_path, layer)
    assert detect_format(str(tmp_path)).name == "mamba_ssm"
    model = nnsight_rnn.load(str(tmp_path))
    assert model.card.family == ("mamba" if layer == "Mamba1" else "mamba2")
    assert isinstance(model._module.backbone.layers[0].mixer, HookableMixer)
    ids = torch.randint(0, 257, (2, 9))
    with torch.no_grad(), model.trace(ids):
        state = model.layers[1].mixer.hook_ssm_state.output.save()
        logits = model.output.logits.save()
    with torch.no_grad():
        torch.testing.assert_close(logits, ref(ids).logits, atol=1e-5, rtol=0)
    assert state.shape[:2] == (2, 9)


def test_pickled_objects_are_refused(tmp_path):
    ref = mamba()
    _write_mamba_ssm_folder(ref, tmp_path, "Mamba1")

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump({"backbone.embedding.weight": Payload()}, f)
    with pytest.raises(pickle.UnpicklingError):
        nnsight_rnn.load(str(tmp_path))


def test_hybrid_layouts_are_refused(tmp_path):
    ref = mamba()
    _write_mamba_ssm_folder(ref, tmp_path, "Mamba1")
    config = json.loads((tmp_path / "config.json").read_text())
    config["attn_layer_idx"] = [1]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="attention layers or an MLP"):
        nnsight_rnn.load(str(tmp_path))


def test_live_mamba_ssm_model_needs_mamba_ssm():
    from nnsight_rnn.checkpoints.live import wrap_mamba_ssm

    with pytest.raises(ImportError, match="mamba-ssm"):
        wrap_mamba_ssm(object())


@pytest.mark.gpu
def test_live_mamba_lm_head_model_wrapped_equals_unwrapped():
    """GPU machines only (``-m gpu``): mamba-ssm needs its CUDA build. Not run in CPU CI."""
    mamba_ssm = pytest.importorskip("mamba_ssm", reason="mamba-ssm (CUDA build) is not importable here")
    from mamba_ssm.models.config_mamba import MambaConfig as SsmConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    from nnsight_rnn.checkpoints.live import wrap_mamba_ssm

    del mamba_ssm
    live = MambaLMHeadModel(SsmConfig(d_model=64, n_layer=2, vocab_size=300), device="cuda").eval()
    model = nnsight_rnn.load(wrap_mamba_ssm(live))
    ids = torch.randint(0, 257, (2, 9), device="cuda")
    with torch.no_grad(), model.trace(ids):
        state = model.layers[1].mixer.hook_ssm_state.output.save()
        logits = model.output.logits.save()
    with torch.no_grad():
        torch.testing.assert_close(logits, live(ids).logits.float(), atol=1e-3, rtol=1e-3)
    assert state.shape[:2] == (2, 9)
