"""The adapter contract: raw input of one modality -> ``tokens [B, N, D]`` + ``mask [B, N]``.

An adapter has three stages, so that preprocessing runs in data-loader workers and
only tensors reach the model:

1. ``fit(train_inputs)``: learn non-trainable preprocessing state from the training
   inputs (a BPE vocabulary, per-channel normalization). Default: nothing to learn.
2. ``encode(x) -> dict[str, Tensor]``: one raw input -> unpadded tensors (CPU).
3. ``collate(list_of_encoded) -> batch``: pad to a batch; ``batch["mask"]`` is
   ``[B, L]`` bool, True = real.
4. ``forward(batch) -> (tokens [B, N, D], mask [B, N])``: the trainable embedding
   (``nn.Module``), the only part that runs on the accelerator.

Preprocessing state is JSON-serialisable (``preprocessing_state`` /
``load_preprocessing_state``) and saved with checkpoints next to the weights.
Nothing modality-specific goes past ``forward``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, TypeVar

from torch import Tensor, nn

from maelre.suggest import did_you_mean


@dataclass
class AdapterConfig:
    """Settings every adapter has.

    Attributes:
        dim: token width D (must equal the backbone's ``dim``).
        max_len: longest token sequence emitted; see ``truncation``.
        truncation: if True, cut inputs longer than ``max_len``; if False, raise ``ValueError``.
        pad_to_multiple: pad the batch's token count up to a multiple of this
            (backbones with segments, e.g. ECP, need it).
    """

    dim: int = 256
    max_len: int = 4096
    truncation: bool = True
    pad_to_multiple: int = 1


class ModalityAdapter(nn.Module):
    """Base class for adapters; subclasses set ``modality`` and ``config_class``."""

    modality: ClassVar[str] = "base"
    config_class: ClassVar[type[AdapterConfig]] = AdapterConfig

    def __init__(self, config: AdapterConfig) -> None:
        super().__init__()
        self.config = config

    @property
    def dim(self) -> int:
        return self.config.dim

    def fit(self, inputs: Sequence[Any]) -> "ModalityAdapter":
        """Learn preprocessing state from training inputs; returns ``self``."""
        return self

    def encode(self, x: Any) -> dict[str, Tensor]:
        raise NotImplementedError

    def collate(self, items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        raise NotImplementedError

    def bucket_lengths(self, count: int) -> tuple[int, ...] | None:
        """At most ``count`` sequence lengths that ``collate(items, buckets=...)`` pads a batch up to.

        A compiled fit (``TrainerConfig.compile_length_buckets``) passes them so that it sees
        few distinct shapes; they are in the unit of ``collate``'s padded dimension. ``None``
        (this default): the adapter's batches have one length already, or ``collate`` takes
        no ``buckets``.
        """
        return None

    def preprocessing_state(self) -> dict:
        """JSON-serialisable state learned by ``fit`` (empty when nothing is learned)."""
        return {}

    def load_preprocessing_state(self, state: dict) -> None:
        """Restore what ``preprocessing_state`` returned."""

    def num_tokens(self, x: Any) -> int:
        """How many tokens ``x`` becomes (before batch padding)."""
        return int(self.encode(x)["mask"].sum())


@dataclass
class DatasetSplits:
    """A loaded dataset: raw ``(input, label_index)`` pairs per split.

    ``train``/``val``/``test`` are sequences (lists or lazy ``Sequence`` objects whose
    ``__getitem__`` returns ``(x, y)``). ``modality`` names the adapter family the raw
    inputs are for; ``meta`` carries provenance (source, folder, generator seed, ...).
    """

    train: Sequence[tuple[Any, int]]
    test: Sequence[tuple[Any, int]]
    classes: list[str]
    modality: str
    val: Sequence[tuple[Any, int]] | None = None
    meta: dict = field(default_factory=dict)


_ADAPTERS: dict[str, type[ModalityAdapter]] = {}
A = TypeVar("A", bound=type[ModalityAdapter])


def register_adapter(name: str) -> Callable[[A], A]:
    def wrap(cls: A) -> A:
        _ADAPTERS[name] = cls
        return cls

    return wrap


def list_adapters() -> list[str]:
    import modalities  # noqa: F401  (registers the built-in adapters)

    return sorted(_ADAPTERS)


def create_adapter(name: str, **config: Any) -> ModalityAdapter:
    """Instantiate adapter ``name`` with config fields ``**config`` (unknown keys are an error)."""
    list_adapters()
    if name not in _ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}{did_you_mean(name, _ADAPTERS)} Available: {', '.join(sorted(_ADAPTERS))}")
    cls = _ADAPTERS[name]
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    for key in config:
        if key not in fields:
            raise ValueError(f"adapter {name!r} has no setting {key!r}{did_you_mean(key, fields)} Valid: {', '.join(sorted(fields))}")
    return cls(cls.config_class(**config))


def adapter_config_class(name: str) -> type[AdapterConfig]:
    list_adapters()
    if name not in _ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}{did_you_mean(name, _ADAPTERS)}")
    return _ADAPTERS[name].config_class


def registered_name(adapter: ModalityAdapter) -> str:
    """The registry name of ``adapter``'s class: what ``create_adapter`` rebuilds it from (checkpoints store it)."""
    list_adapters()
    for name, cls in sorted(_ADAPTERS.items()):
        if cls is type(adapter):
            return name
    raise ValueError(f"{type(adapter).__qualname__} is not a registered adapter; decorate it with @register_adapter(name) so checkpoints can rebuild it")
