"""LoRA EQ core: model loading, tuning-point analysis, data, equalizer, training, variants.

Nothing in this package imports gradio: the web UI in `playground/` and the CLI in
`adapters/cli/` are thin layers over these functions. Only `adapters/cli/` imports `evals`.
"""

__version__ = "0.1.0"
