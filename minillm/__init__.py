"""minillm: a pure-NumPy T5 with hand-written backprop.

    import minillm
    model = minillm.from_pretrained("path/to/t5-folder")     # a Hugging Face T5 folder
    model = minillm.T5.init(minillm.T5Config(...), rng)       # fresh weights
    ids = minillm.generate(model, input_ids, num_beams=4)     # as transformers' generate

``import minillm`` needs only NumPy; the tokenizer, safetensors, tqdm and the
reference libraries are imported by the modules that use them.
"""

from minillm import ops, optim
from minillm.backend import get_xp
from minillm.config import T5Config
from minillm.generation import generate
from minillm.model import T5, from_pretrained

__version__ = "0.1.0"

__all__ = ["T5", "T5Config", "from_pretrained", "generate", "get_xp", "ops", "optim", "__version__"]
