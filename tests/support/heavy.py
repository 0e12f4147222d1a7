"""The packages the light commands (prepare, eval, report, config render, label, a warm plan,
generate/judge --backend openai) must not import: one list for the start-up tests and the import graph."""

# The model stack: what loading or training a model imports.
MODEL_STACK = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "axolotl",
    "datasets",
    "safetensors",
    "tokenizers",
    "huggingface_hub",
)
# Needed only by some inputs, backends or outputs: Parquet input, an HTTP server, Hub kernels, plots.
ONLY_SOME = ("pyarrow", "httpx", "kernels", "matplotlib")
