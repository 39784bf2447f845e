"""What a base is and how to load one: the BasePolicy seam, the embedded base, any LeRobot policy, the control
group's fine-tuning, the one resolver every command uses (resolve.py) and the base's actions in the shards.
Adding a base policy touches this folder only (docs/architecture.md, "How to add a base policy")."""

from sigma_vla.bases.lerobot import LeRobotPolicyBase
from sigma_vla.bases.policy import BasePolicy, TinyBaseConfig, TinyBasePolicy, load_base_policy

__all__ = ["BasePolicy", "LeRobotPolicyBase", "TinyBaseConfig", "TinyBasePolicy", "load_base_policy"]
