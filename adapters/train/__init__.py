"""The training stage: from a data spec to a run folder (`dataspec`), what a variant will be
(`plan`), training (the Trainer, the LoRA step, the label-only loss), the queue and the one reader
of a run folder, classification runs. Imports only earlier stages."""
