"""tuned-lens's own CLI (``python -m tuned_lens train|eval``) on nnsight-rnn models, offline.

Usage (the arguments are tuned-lens's own; ``--help`` lists them)::

    python -m nnsight_rnn.integrations.tuned_lens_cli train --model.name zoo/mamba-tiny \\
        --data.name text.jsonl --data.max_length 64 --per_gpu_batch_size 8 --tokens_per_step 512 \\
        --num_steps 50 --output lens/
    python -m nnsight_rnn.integrations.tuned_lens_cli eval --model.name zoo/mamba-tiny \\
        --data.name text.jsonl --data.max_length 64 --lens_name lens/ --lens_types logit tuned \\
        --tokens 4096 --output eval/

This module installs the shims below, then runs ``tuned_lens.__main__.main`` unchanged (no file of
tuned-lens is edited). tuned-lens 0.2.0 under torch 2.13 / transformers 5 / torchdata 0.11:

- ``tuned_lens.scripts`` imports ``torchdata.dataloader2`` and ``torchdata.datapipes``, removed in
  torchdata 0.10. When they are missing, small stand-ins are registered in ``sys.modules``
  providing exactly what tuned-lens uses: ``IterableWrapper(ds).shuffle().sharding_filter()
  .batch(n).collate()`` and ``DataLoader2(pipe, reading_service)`` with ``seed``, iteration (one
  seeded shuffled pass, batches collated with ``torch.utils.data.default_collate``, the last
  partial batch kept, as torchdata did), ``state_dict`` / ``load_state_dict`` (resume skips the
  batches already served) and ``DistributedReadingService`` (shards by rank).
- ``Model.load`` passes ``load_in_8bit=`` and ``torch_dtype=``, which transformers 5 rejects or
  deprecates. It is replaced by a loader that accepts zoo names (``zoo/mamba-tiny``), local
  folders (HF or original mamba-ssm format) and hub ids, loads with ``dtype=``, 8-bit only through
  ``BitsAndBytesConfig`` (needs bitsandbytes), moves the model to the device, and calls
  :func:`nnsight_rnn.integrations.tuned_lens.enable` on it (recurrent cards: nnsight-rnn's hookable
  mixers and the hidden-state convention fix). ``Model.load_tokenizer`` resolves zoo names too.
- :func:`nnsight_rnn.integrations.tuned_lens.enable` (model surgery from cards).

Data must be local offline (the default is the Pile from the hub): a ``.jsonl`` with a ``text``
column, ``--data.name file.jsonl``.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from typing import Any

import torch

from ..sources import Source, resolve

_SHIMMED_ATTR = "__nnsight_rnn_shim__"


# ---------------------------------------------------------------------------------------------
# torchdata.dataloader2 / torchdata.datapipes stand-ins
# ---------------------------------------------------------------------------------------------


class IterableWrapper:
    """The datapipe chain tuned-lens builds: a source plus shuffle / sharding / batch / collate flags."""

    def __init__(self, source: Any, deepcopy: bool = True) -> None:
        self.source = source
        self.shuffled = False
        self.sharded = False
        self.batch_size: int | None = None
        self.drop_last = False
        self.collated = False

    def _copy(self, **changes: Any) -> IterableWrapper:
        new = IterableWrapper(self.source)
        new.__dict__.update({**self.__dict__, **changes})
        return new

    def shuffle(self, buffer_size: int | None = None) -> IterableWrapper:
        return self._copy(shuffled=True)

    def sharding_filter(self) -> IterableWrapper:
        return self._copy(sharded=True)

    def batch(self, batch_size: int, drop_last: bool = False) -> IterableWrapper:
        return self._copy(batch_size=batch_size, drop_last=drop_last)

    def collate(self) -> IterableWrapper:
        return self._copy(collated=True)

    def __iter__(self) -> Iterator[Any]:
        return iter(DataLoader2(self))


class DistributedReadingService:
    """Marks a loader as sharded across ``torch.distributed`` ranks."""


class DataLoader2:
    """One seeded pass over an :class:`IterableWrapper` chain (what tuned-lens 0.2.0 needs of torchdata's)."""

    def __init__(self, datapipe: IterableWrapper, reading_service: Any = None) -> None:
        self.datapipe = datapipe
        self.reading_service = reading_service
        self._seed = 0
        self._served = 0
        self._skip = 0

    def seed(self, seed: int) -> None:
        self._seed = int(seed)

    def __len__(self) -> int:
        n = len(self._order())
        size = self.datapipe.batch_size or 1
        return n // size if self.datapipe.drop_last else -(-n // size)

    def _order(self) -> list[int]:
        n = len(self.datapipe.source)
        if self.datapipe.shuffled:
            gen = torch.Generator().manual_seed(self._seed)
            order = torch.randperm(n, generator=gen).tolist()
        else:
            order = list(range(n))
        if self.datapipe.sharded and isinstance(self.reading_service, DistributedReadingService):
            import torch.distributed as dist

            if dist.is_initialized():
                order = order[dist.get_rank() :: dist.get_world_size()]
        return order

    def __iter__(self) -> Iterator[Any]:
        from torch.utils.data import default_collate

        pipe = self.datapipe
        order = self._order()
        size = pipe.batch_size
        if size is None:
            chunks = [[i] for i in order]
        else:
            chunks = [order[k : k + size] for k in range(0, len(order), size)]
            if pipe.drop_last and chunks and len(chunks[-1]) < size:
                chunks.pop()
        skip, self._skip, self._served = self._skip, 0, 0
        for chunk in chunks[skip:]:
            items = [pipe.source[i] for i in chunk]
            if size is None:
                out: Any = items[0]
            else:
                out = default_collate(items) if pipe.collated else items
            self._served += 1
            yield out

    def state_dict(self) -> dict[str, int]:
        return {"seed": self._seed, "served": self._served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._seed = int(state.get("seed", self._seed))
        self._skip = int(state.get("served", 0))

    def shutdown(self) -> None:
        return


def _install_torchdata_shim() -> None:
    try:
        from torchdata import dataloader2, datapipes  # noqa: F401

        return  # an old torchdata that still has them
    except ImportError:
        pass
    import torchdata

    dl2 = types.ModuleType("torchdata.dataloader2")
    dl2.DataLoader2 = DataLoader2  # type: ignore[attr-defined]
    dl2.DistributedReadingService = DistributedReadingService  # type: ignore[attr-defined]
    setattr(dl2, _SHIMMED_ATTR, True)
    dp = types.ModuleType("torchdata.datapipes")
    dp_iter = types.ModuleType("torchdata.datapipes.iter")
    dp_iter.IterableWrapper = IterableWrapper  # type: ignore[attr-defined]
    dp.iter = dp_iter  # type: ignore[attr-defined]
    setattr(dp, _SHIMMED_ATTR, True)
    sys.modules["torchdata.dataloader2"] = dl2
    sys.modules["torchdata.datapipes"] = dp
    sys.modules["torchdata.datapipes.iter"] = dp_iter
    torchdata.dataloader2 = dl2  # type: ignore[attr-defined]
    torchdata.datapipes = dp  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# Model.load / Model.load_tokenizer
# ---------------------------------------------------------------------------------------------


def resolve_model_name(name: str) -> str:
    """A zoo name -> its folder (shipped, or built on first use); folders and hub ids unchanged.

    Anything that can be no model is a :class:`~nnsight_rnn.errors.SourceError` naming the fix
    (:func:`nnsight_rnn.sources.resolve`), not the hub's traceback.
    """
    return str(_source(name).value)


def _source(name: str) -> Source:
    """``resolve(name)``, with a zoo name resolved on to the folder it lives in."""
    src = resolve(name)
    if src.kind == "zoo":
        from ..zoo import zoo_path

        src = resolve(zoo_path(name))
    return src


def load_model(name: str, *, precision: str = "auto", revision: str | None = "main", device: Any = None,
               must_use_cache: bool = False) -> torch.nn.Module:  # fmt: skip
    """Load a causal LM the way tuned-lens's ``Model.load`` meant to, on transformers 5, ready for tuned-lens.

    ``precision``: ``auto`` / ``bfloat16`` / ``float16`` / ``float32`` / ``int8`` (needs bitsandbytes).
    Returns the model in eval mode, ``requires_grad_(False)``, on ``device``, with
    :func:`nnsight_rnn.integrations.tuned_lens.enable` applied.
    """
    from transformers import AutoModelForCausalLM

    from .tuned_lens import enable

    dtypes = {"auto": "auto", "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32,
              "int8": torch.float16}  # fmt: skip
    if precision not in dtypes:
        raise ValueError(f"Unknown precision: {precision!r}; one of {sorted(dtypes)}")
    src = _source(name)
    path = str(src.value)
    if src.checkpoint_format is not None:
        model = src.checkpoint_format.load(path)
        if precision not in ("auto", "float32"):
            model = model.to(dtypes[precision])
    else:
        kwargs: dict[str, Any] = {"dtype": dtypes[precision], "local_files_only": must_use_cache}
        if revision is not None and src.kind == "hub":
            kwargs["revision"] = revision
        if precision == "int8":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
            kwargs["device_map"] = {"": device} if device is not None else None
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if device is not None and precision != "int8":
        model = model.to(device)
    model.eval()
    model.requires_grad_(False)
    enable(model)
    return model


def _patched_model_load(self: Any, device: Any, must_use_cache: bool = False) -> tuple[Any, Any]:
    print(f"Loading pretrained weights for '{self.name}'...")
    model = load_model(self.name, precision=self.precision, revision=self.revision, device=device,
                       must_use_cache=must_use_cache)  # fmt: skip
    return model, self.load_tokenizer(must_use_cache=must_use_cache)


def load_tokenizer(name: str, *, revision: str | None = "main", must_use_cache: bool = False,
                   slow: bool = False) -> Any:  # fmt: skip
    """The tokenizer of a zoo name / folder (its own, or the byte tokenizer if it has none) / hub id."""
    from transformers import AutoTokenizer, PreTrainedTokenizerBase

    from ..tokenizer import find_tokenizer

    src = _source(name)
    path = str(src.value)
    if src.kind == "folder":
        tokenizer = find_tokenizer(path)
    else:
        kwargs: dict[str, Any] = {"revision": revision, "local_files_only": must_use_cache}
        if slow:
            kwargs["use_fast"] = False
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(f"expected a transformers tokenizer for {name!r}, got {type(tokenizer).__name__}")
    return tokenizer


def _patched_load_tokenizer(self: Any, must_use_cache: bool = False) -> Any:
    return load_tokenizer(self.tokenizer or self.name, revision=self.revision, must_use_cache=must_use_cache,
                          slow=self.slow_tokenizer)  # fmt: skip


def _fix_lens_types_argument(eval_cls: type) -> None:
    """``--lens_types logit tuned``: simple-parsing >= 0.1.4 hands argparse ``typing.Literal`` itself as the
    item type of ``list[Literal[...]]`` (every value is then "invalid"); give the field an explicit parser."""
    import dataclasses
    import types as _types
    import typing

    fields = {f.name: f for f in dataclasses.fields(eval_cls)}
    field = fields.get("lens_types")
    if field is None or "type" in field.metadata.get("custom_args", {}):
        return
    (item,) = typing.get_args(field.type) or (None,)
    choices = tuple(typing.get_args(item)) if typing.get_origin(item) is typing.Literal else ("logit", "tuned")

    def lens_type(value: str) -> str:
        if value not in choices:
            raise ValueError(f"unknown lens type {value!r}; one of {choices}")
        return value

    custom = {**field.metadata.get("custom_args", {}), "type": lens_type, "choices": list(choices)}
    field.metadata = _types.MappingProxyType({**field.metadata, "custom_args": custom})


def install_shims() -> None:
    """Install every shim (idempotent): torchdata stand-ins, ``Model.load`` / ``load_tokenizer``, :func:`enable`."""
    _install_torchdata_shim()
    import tuned_lens.scripts.ingredients as ing

    from .tuned_lens import enable

    if not getattr(ing.Model.load, _SHIMMED_ATTR, False):
        setattr(_patched_model_load, _SHIMMED_ATTR, True)
        ing.Model.load = _patched_model_load  # type: ignore[method-assign]
        ing.Model.load_tokenizer = _patched_load_tokenizer  # type: ignore[method-assign]
    import tuned_lens.scripts.eval_loop as eval_loop
    import tuned_lens.scripts.train_loop  # noqa: F401

    _fix_lens_types_argument(eval_loop.Eval)
    enable()  # after the imports, so that their `from tuned_lens.model_surgery import ...` names are rebound


def main(argv: list[str] | None = None) -> None:
    """Install the shims, then run tuned-lens's own CLI ``main`` with ``argv`` (default: ``sys.argv[1:]``)."""
    install_shims()
    from tuned_lens.__main__ import main as tuned_lens_main

    tuned_lens_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
