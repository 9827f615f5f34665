"""The T5 model: the parameter schema and init, one stack's forward/backward, the whole model,
and the decoder's KV cache for generation.

    params.py     HF parameter names and shapes, T5's init, checking a checkpoint's tensors
    stack.py      one encoder or decoder stack, forward and backward
    t5.py         T5: encode / decode / LM head, loss and gradients, save / load
    kv_cache.py   the incremental decode step over a pre-allocated KV cache
"""

from minillm.model.params import init_params, param_shapes
from minillm.model.t5 import T5, from_pretrained, shift_right

__all__ = ["T5", "from_pretrained", "init_params", "param_shapes", "shift_right"]
