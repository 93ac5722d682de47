"""The data stage: read a user's data file, validate every row, mix it and hold some out.

    from . import load_dataset, build_mixture, split_heldout

    ds = load_dataset("train.jsonl", max_length=2048, tokenizer=tok)   # Dataset: examples + rejects
    mix = build_mixture(ds, quotas={"creative_writing": 100}, size=5000, seed=0)
    train, heldout = split_heldout(ds, fraction=0.1, seed=0)

Files: `readers.py` (file formats), `shapes.py` (row shapes -> chat messages), `validate.py`
(conversation and metadata rules), `load.py` (the pipeline), `stats.py` (token counts),
`records.py` (the objects), `mixture.py` (weights and quotas), `split.py` (held-out split),
`samples.py` (the sample datasets); `loraeq data ...` is `loraeq/data.py`. Nothing here imports gradio.
"""

from .load import load_dataset
from .mixture import CategoryMix, Mixture, build_mixture
from .readers import FILE_TYPES
from .records import Dataset, Example, Rejected, RowIssue, content_hash, token_summary, write_jsonl, write_rejects
from .shapes import FORMATS
from .split import Split, split_heldout
from .stats import count_tokens, with_token_counts

__all__ = [
    "FILE_TYPES",
    "FORMATS",
    "CategoryMix",
    "Dataset",
    "Example",
    "Mixture",
    "Rejected",
    "RowIssue",
    "Split",
    "build_mixture",
    "content_hash",
    "count_tokens",
    "load_dataset",
    "split_heldout",
    "token_summary",
    "write_jsonl",
    "with_token_counts",
    "write_rejects",
]
