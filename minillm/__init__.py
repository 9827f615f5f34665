"""minillm: a pure-NumPy T5 with hand-written backprop.

    import minillm
    model = minillm.from_pretrained("path/to/t5-folder")     # a Hugging Face T5 folder
    model = minillm.T5.init(minillm.T5Config(...), rng)       # fresh weights
    ids = minillm.generate(model, input_ids, num_beams=4)     # as transformers' generate
    loss, grads = model.loss_and_grads(input_ids, labels)     # the reference, written as the math
    loss, grads = minillm.engine.loss_and_grads(model, input_ids, labels)   # the same, lean (trainers)

``import minillm`` needs only NumPy; the tokenizer, safetensors, tqdm and the
reference libraries are imported by the modules that use them.
"""

from minillm import engine, ops, optim
from minillm.backend import get_xp
from minillm.config import T5Config
from minillm.generation import generate
from minillm.model import T5, from_pretrained

__version__ = "0.1.0"

__all__ = [
    "T5", "T5Config", "engine", "from_pretrained", "generate", "get_xp", "ops", "optim", "__version__",
]
