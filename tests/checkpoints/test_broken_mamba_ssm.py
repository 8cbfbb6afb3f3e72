"""A mamba-ssm that is installed but unusable (no CUDA) must not break nnsight-rnn.

transformers binds mamba-ssm's kernels at import time when the package imports, without a device
check, so stock HF Mamba then crashes on CPU. The hookable mixer never calls those kernels. We put
a stand-in ``mamba_ssm`` whose kernels raise on the path of a fresh interpreter and run both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from nnsight_rnn.upstream import minor, version_of

FAKE = {
    "mamba_ssm/__init__.py": "__version__ = '2.3.2'\n" + "\n".join(
        f"def {name}(*a, **k):\n    raise RuntimeError('mamba-ssm kernel needs CUDA')"
        for name in ("selective_scan_fn", "mamba_inner_fn", "selective_state_update")
    ) + "\nfrom . import ops\n",
    "mamba_ssm/ops/__init__.py": "from .selective_scan_interface import *\nfrom . import triton\n",
    "mamba_ssm/ops/selective_scan_interface.py": "from .. import selective_scan_fn, mamba_inner_fn\n",
    "mamba_ssm/ops/triton/__init__.py": "from . import selective_state_update\n",
    "mamba_ssm/ops/triton/selective_state_update.py": "from ... import selective_state_update\n",
}  # fmt: skip

SCRIPT = textwrap.dedent(
    """
    import torch, transformers, mamba_ssm
    assert mamba_ssm.__file__.startswith(%r), mamba_ssm.__file__  # the stand-in
    from transformers import MambaConfig, MambaForCausalLM
    cfg = MambaConfig(vocab_size=50, hidden_size=16, state_size=4, num_hidden_layers=1, intermediate_size=32)
    model = MambaForCausalLM(cfg).eval()
    ids = torch.randint(0, 50, (1, 5))
    try:
        model(ids)
        print("stock: ok")
    except RuntimeError as error:
        print("stock: crashed:", error)
    import nnsight_rnn
    hooked = nnsight_rnn.load(model)
    with torch.no_grad(), hooked.trace(ids):
        out = hooked.output.logits.save()
    print("nnsight-rnn: ok", tuple(out.shape))
    """
)


def test_unusable_mamba_ssm_does_not_break_nnsight_rnn(tmp_path):
    for rel, text in FAKE.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT % str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "nnsight-rnn: ok (1, 5, 50)" in result.stdout
    # The stand-in really was picked up by transformers: stock HF hits its kernel (up to 5.24; from 5.25
    # transformers checks the device before it calls a kernel and falls back to its torch reference).
    if minor(version_of("transformers") or "0.0") <= (5, 24):
        assert "stock: crashed: mamba-ssm kernel needs CUDA" in result.stdout, result.stdout
    else:
        assert "stock: ok" in result.stdout, result.stdout
