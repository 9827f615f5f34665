"""The T5 model, the reference: the parameter schema and init, one stack's forward/backward, the whole model.

    params.py     HF parameter names and shapes, T5's init, checking a checkpoint's tensors
    stack.py      one encoder or decoder stack, forward and backward
    t5.py         T5: encode / decode / LM head, loss and gradients, save / load

The lean engine the trainers and decoding use is :mod:`minillm.engine`.
"""

from minillm.model.params import init_params, param_shapes
from minillm.model.t5 import T5, from_pretrained, shift_right

__all__ = ["T5", "from_pretrained", "init_params", "param_shapes", "shift_right"]
