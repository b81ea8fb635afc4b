"""Modality adapters (raw input -> tokens [B, N, D] + mask) and real dataset loaders."""
from modalities import audio, image, text, timeseries  # noqa: F401  (registration)
from modalities.base import AdapterConfig, DatasetSplits, ModalityAdapter, create_adapter, list_adapters, register_adapter

__all__ = ["AdapterConfig", "DatasetSplits", "ModalityAdapter", "create_adapter", "list_adapters", "register_adapter"]
