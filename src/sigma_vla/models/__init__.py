"""The Sigma model (paper section 3): config, the three workspaces, the MLLM backbone seam and the base-policy seam.

Public API: SigmaConfig (+ VisionConfig, LanguageConfig, ActionConfig, BackboneConfig), SigmaModel, SigmaOutput,
make_fake_batch, Backbone / HFBackbone / build_backbone, TextTokenizer / TaskTokens, the base policies
(BasePolicy, TinyBasePolicy, TinyBaseConfig, LeRobotPolicyBase), ActionTriple (the three time scales), and
Normalizer / BatchTransform (shard batch -> model batch, shared by training, inference and evaluation).
Importing this package never imports lerobot.
"""

from sigma_vla.models.action_triple import ActionTriple
from sigma_vla.models.backbone import Backbone, HFBackbone, build_backbone
from sigma_vla.models.base_policy import BasePolicy, TinyBaseConfig, TinyBasePolicy, load_base_policy
from sigma_vla.models.config import (
    ActionConfig,
    BackboneConfig,
    ConfigError,
    LanguageConfig,
    SigmaConfig,
    VisionConfig,
)
from sigma_vla.models.fake import make_fake_batch
from sigma_vla.models.lerobot_base import LeRobotPolicyBase
from sigma_vla.models.sigma import SigmaModel, SigmaOutput
from sigma_vla.models.text import TaskTokens, TextTokenizer
from sigma_vla.models.transforms import BatchTransform, Normalizer

__all__ = [
    "ActionConfig", "ActionTriple", "Backbone", "BackboneConfig", "BasePolicy", "BatchTransform", "ConfigError",
    "HFBackbone", "LanguageConfig", "LeRobotPolicyBase", "Normalizer", "SigmaConfig", "SigmaModel", "SigmaOutput",
    "TaskTokens", "TextTokenizer", "TinyBaseConfig", "TinyBasePolicy", "VisionConfig", "build_backbone",
    "load_base_policy", "make_fake_batch",
]
