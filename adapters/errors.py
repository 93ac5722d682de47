"""User-facing errors.

A `LoraEqError` is bad input from the user (a missing file, a model that is not a causal LM,
a bad setting). Its message is one line that names the problem; the CLI prints it and exits 2,
the web UI shows it. Anything else that escapes is a bug in LoRA EQ.
"""


class LoraEqError(Exception):
    """Bad input whose message is fit to show the user as it is."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
