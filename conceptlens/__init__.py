"""conceptlens: explain medical vision-language models in the language clinicians use.

Layers, each a subpackage (dependencies point one way, right to left):
``explain`` -> ``concepts`` -> ``vocab`` -> ``models``; ``demo`` ships the synthetic
dermoscopy benchmark and the demo model.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
