"""A first minillm model: build a small T5, take a few AdamW steps on a toy
copy task, save it as a Hugging Face folder and load it back.

    python examples/quickstart.py [OUT_DIR]
"""

import sys
import tempfile

import numpy as np

import minillm

rng = np.random.default_rng(0)
config = minillm.T5Config(vocab_size=32, d_model=64, d_kv=16, num_heads=4, d_ff=128,
                          num_layers=2, dropout_rate=0.0, feed_forward_proj="relu")
model = minillm.T5.init(config, rng)
print(f"T5 with {model.num_parameters():,} parameters")

# A toy task: copy the input. Ids 3..31 are "words"; 1 is </s>.
inputs = rng.integers(3, 32, (16, 6))
input_ids = np.concatenate([inputs, np.ones((16, 1), dtype=inputs.dtype)], axis=1)  # (B, S)
labels = input_ids.copy()  # (B, T): the output is the input, </s> included

opt = minillm.optim.AdamW(lr=3e-3)
for step in range(30):
    loss, grads = model.loss_and_grads(input_ids, labels)
    minillm.optim.clip_grad_norm(grads, 1.0)
    opt.step(model.params, grads)
    if step % 10 == 0 or step == 29:
        print(f"step {step:2d}  loss {loss:.3f}")

out = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="minillm-")
model.save_pretrained(out)
again = minillm.from_pretrained(out)
same = np.array_equal(again.logits(input_ids, labels), model.logits(input_ids, labels))
print(f"saved to {out} (config.json + model.safetensors); reloaded logits identical: {same}")
