"""The Sigma network (paper section 3): its typed config, the three workspaces, the MLLM backbone with LoRA, and its
model directory. Bases live in sigma_vla.bases, the batch recipe in sigma_vla.processing."""

from sigma_vla.models.backbone import Backbone, HFBackbone, build_backbone
from sigma_vla.models.config import (
    ActionConfig,
    BackboneConfig,
    ConfigError,
    LanguageConfig,
    SigmaConfig,
    VisionConfig,
)
from sigma_vla.models.fake import make_fake_batch
from sigma_vla.models.sigma import SigmaModel, SigmaOutput

__all__ = [
    "ActionConfig", "Backbone", "BackboneConfig", "ConfigError", "HFBackbone", "LanguageConfig", "SigmaConfig",
    "SigmaModel", "SigmaOutput", "VisionConfig", "build_backbone", "make_fake_batch",
]
