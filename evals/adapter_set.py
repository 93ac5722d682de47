"""The base and every finished variant of a run, on one model: named PEFT adapters.

One frozen base is wrapped once in a `PeftModel` and each variant's adapter is loaded next to the
others under a short id (`v0`, `v1`, ...: PEFT module keys cannot hold the dots a variant name may
have). Callers pick a model per row with PEFT's `adapter_names=[...]`, where `BASE_ROW` ("__base__")
means the base itself, so nothing switches a shared active adapter. `release` takes the LoRA
layers out again and the base modules come back as they were. This file computes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from adapters.errors import LoraEqError
from adapters.infer.adapter_rows import BASE_ROW


@dataclass
class AdapterSet:
    """A PeftModel carrying every variant as a named adapter, with the tokenizer to talk to it."""

    model: object  # peft.PeftModel, in eval mode
    tokenizer: object
    device: str
    ids: dict[str, str] = field(default_factory=dict)  # variant name -> adapter id

    def __post_init__(self) -> None:
        if BASE_ROW in self.ids.values():
            raise LoraEqError(f"{BASE_ROW!r} is reserved for the base model")
        if len(set(self.ids.values())) != len(self.ids):
            raise LoraEqError("two variants share one adapter id")

    @property
    def names(self) -> list[str]:
        """Adapter ids of the base and every variant, base first."""
        return [BASE_ROW, *self.ids.values()]


def load_adapter_set(base, folders: dict[str, Path]) -> AdapterSet:
    """Wrap the loaded base (`adapters.base.loading.LoadedModel`) and load each variant's adapter folder."""
    from peft import PeftModel

    if not folders:
        raise LoraEqError("no finished variant to load")
    ids = {name: f"v{i}" for i, name in enumerate(folders)}
    model = None
    try:
        for name, folder in folders.items():
            if model is None:
                model = PeftModel.from_pretrained(base.model, str(folder), adapter_name=ids[name], is_trainable=False)
            else:
                model.load_adapter(str(folder), adapter_name=ids[name], is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        if model is not None:
            model.unload()
        raise LoraEqError(f"cannot load the adapter of {name!r} from {folder} ({type(e).__name__}: {e})") from None
    model.eval()
    return AdapterSet(model=model, tokenizer=base.tokenizer, device=base.device, ids=ids)


def release(adapters: AdapterSet) -> None:
    """Remove every LoRA layer; the base model object is left exactly as it was loaded."""
    adapters.model.unload()
