"""sigma-vla: turn a frozen vision-language-action policy into Sigma (paper: "Sigma: The Key for VLA Models toward
Telepathic Alignment"). See docs/architecture.md for the layers and the map from the paper's sections to this
package."""

__version__ = "0.1.0"
