"""minillm: a pure-NumPy T5 with hand-written backprop.

    import minillm
    model = minillm.from_pretrained("path/to/t5-folder")     # a Hugging Face T5 folder
    model = minillm.T5.init(minillm.T5Config(...), rng)       # fresh weights
    ids = minillm.generate(model, input_ids, num_beams=4)     # as transformers' generate
    loss, grads = model.loss_and_grads(input_ids, labels)     # the reference, written as the math
    loss, grads = minillm.engine.loss_and_grads(model, input_ids, labels)   # the same, lean (trainers)

``import minillm`` needs only NumPy; the tokenizer, safetensors, tqdm and the
reference libraries are imported by the modules that use them. The names below are
loaded on first use (PEP 562), so ``import minillm.cli`` starts the command line
without loading the model first: a Ctrl-C while it starts gets one line, not a traceback.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# the package's face: each name and the module it comes from
_NAMES = {
    "T5": "minillm.model", "from_pretrained": "minillm.model", "T5Config": "minillm.config",
    "generate": "minillm.generation", "get_xp": "minillm.backend",
}
_MODULES = ("engine", "ops", "optim")

__all__ = [*_NAMES, *_MODULES, "__version__"]


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"minillm.{name}")
    else:
        raise AttributeError(f"module 'minillm' has no attribute {name!r}")
    globals()[name] = value  # loaded once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
