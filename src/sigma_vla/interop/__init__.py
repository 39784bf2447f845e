"""The bottom of the house: what other projects' files are (LeRobot checkpoints, Hugging Face assets) and the one
fingerprint of "which model". Nothing here imports torch models of ours (docs/architecture.md, "Layers")."""
