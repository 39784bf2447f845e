"""sigma-vla: turn a frozen vision-language-action policy into Sigma (paper: "Sigma: The Key for VLA Models toward
Telepathic Alignment"). See DESIGN.md for the map from the paper's names to this package."""

__version__ = "0.1.0"
