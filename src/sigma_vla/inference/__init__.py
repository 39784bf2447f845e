"""Inference: the risk-gated adapter (paper 4.3) and SigmaPolicy, the controller over base + Sigma."""

from sigma_vla.inference.adapter import AdapterConfig, AdapterOutput, adapt
from sigma_vla.inference.policy import (PolicyConfig, SigmaPolicy, load_sigma_policy,
                                        load_sigma_policy_factory)

__all__ = ["AdapterConfig", "AdapterOutput", "adapt", "PolicyConfig", "SigmaPolicy", "load_sigma_policy",
           "load_sigma_policy_factory"]
