"""maelre: long-sequence classification for text, audio, time series and images.

Public entry points:
    create_backbone(name, **config), list_backbones()   -- the backbone registry
    SequenceClassifier                                   -- adapter + backbone + head
    MAELREClassifier                                     -- scikit-learn estimator (lazy import)
"""
from maelre.backbones.base import Backbone, BackboneConfig, BackboneOutput, BlockInfo
from maelre.model import ClassifierHead, SequenceClassifier
from maelre.registry import create_backbone, get_backbone_class, list_backbones, make_config, register_backbone

__version__ = "0.1.0"

__all__ = [
    "Backbone",
    "BackboneConfig",
    "BackboneOutput",
    "BlockInfo",
    "ClassifierHead",
    "MAELREClassifier",
    "SequenceClassifier",
    "create_backbone",
    "get_backbone_class",
    "list_backbones",
    "make_config",
    "register_backbone",
]


def __getattr__(name: str):
    # The estimator pulls in scikit-learn; import it only when asked for.
    if name == "MAELREClassifier":
        from maelre.estimator import MAELREClassifier

        return MAELREClassifier
    raise AttributeError(f"module 'maelre' has no attribute {name!r}")
