"""Built-in backbones; importing this package registers them all.

Each module is one architecture (timm style). A module missing here is simply not
registered yet, so the registry lists exactly what exists.
"""
from importlib import import_module

from maelre.backbones.base import Backbone, BackboneConfig, BackboneOutput, BlockInfo

for _name in ("transformer", "maelre", "perceiver_ar", "ecp", "masformer"):
    try:
        import_module(f"maelre.backbones.{_name}")
    except ModuleNotFoundError as err:  # only tolerate the module itself being absent
        if err.name != f"maelre.backbones.{_name}":
            raise

__all__ = ["Backbone", "BackboneConfig", "BackboneOutput", "BlockInfo"]
