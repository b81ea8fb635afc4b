"""Built-in backbones; importing this package registers them all (one module per architecture)."""
from maelre.backbones import ecp, maelre, masformer, perceiver_ar, transformer  # noqa: F401  (registration)
from maelre.backbones.base import Backbone, BackboneConfig, BackboneOutput, BlockInfo

__all__ = ["Backbone", "BackboneConfig", "BackboneOutput", "BlockInfo"]
