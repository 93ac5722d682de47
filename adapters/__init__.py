"""LoRA EQ core, one sub-package per stage of the data flow, each importing only earlier ones:
base (model sources, loading, tokenization, analysis) -> data (files, validation, mixtures, splits)
-> shape (equalizer, suggestion, variants and hyperparameters) -> train (data spec to run folder,
training, the run folder) -> share (adapters from anywhere, export) -> infer (side-by-side answers,
chat). `files/` reads and writes the files users hand over; `errors`, `cache`, `limits`, `runtime`
and `fastpath` are shared by all. Nothing in this package imports gradio or `evals`: the web UI in
`playground/` and the CLI in `loraeq/` are thin layers over these functions.
"""

__version__ = "0.1.0"
