"""mixft: fine-tune open LLMs with QLoRA through Axolotl and measure how much they hallucinate.

Importing the package does nothing beyond defining the version: no logging set-up,
no torch import.
"""

__version__ = "0.1.0"
