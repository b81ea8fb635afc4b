"""Training engine: data loading, the Lightning task, pickle-free checkpoints and the programmatic API.

The models in ``maelre`` never import Lightning; this package is the only place that does.
"""
from maelre.engine.building import ModelSpec, build_model, model_from_spec, prepare_adapter
from maelre.engine.checkpoint import LoadedModel, SafeCheckpointIO, latest_checkpoint, load_model, resolve_checkpoint, save_model
from maelre.engine.data import make_dataloader, split_validation
from maelre.engine.fit import fit_classifier
from maelre.engine.fit_types import FitResult, TrainerConfig
from maelre.engine.inference import evaluate, predict_proba
from maelre.engine.seed import seed_everything
from maelre.engine.task import ClassificationTask, OptimConfig

__all__ = [
    "ClassificationTask",
    "FitResult",
    "LoadedModel",
    "ModelSpec",
    "OptimConfig",
    "SafeCheckpointIO",
    "TrainerConfig",
    "build_model",
    "model_from_spec",
    "evaluate",
    "fit_classifier",
    "latest_checkpoint",
    "load_model",
    "make_dataloader",
    "predict_proba",
    "prepare_adapter",
    "resolve_checkpoint",
    "save_model",
    "seed_everything",
    "split_validation",
]
