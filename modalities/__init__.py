"""Modality adapters (raw input -> tokens [B, N, D] + mask) and real dataset loaders."""
from importlib import import_module

from modalities.base import AdapterConfig, DatasetSplits, ModalityAdapter, create_adapter, list_adapters, register_adapter

for _name in ("text", "audio", "timeseries", "image"):
    try:
        import_module(f"modalities.{_name}")
    except ModuleNotFoundError as err:  # tolerate only the module itself being absent
        if err.name != f"modalities.{_name}":
            raise

__all__ = ["AdapterConfig", "DatasetSplits", "ModalityAdapter", "create_adapter", "list_adapters", "register_adapter"]
