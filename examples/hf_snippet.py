"""The classic Hugging Face snippet, with minillm instead of transformers.

transformers::

    from transformers import AutoTokenizer, T5ForConditionalGeneration
    tokenizer = AutoTokenizer.from_pretrained("t5-small")
    model = T5ForConditionalGeneration.from_pretrained("t5-small")
    input_ids = tokenizer("translate English to German: The house is wonderful.",
                          return_tensors="pt").input_ids
    outputs = model.generate(input_ids)
    print(tokenizer.decode(outputs[0], skip_special_tokens=True))

minillm, for a T5 folder on disk (a downloaded t5-small / flan-t5-small, or a
``minillm train`` run folder; no network)::

    python examples/hf_snippet.py path/to/t5-folder ["prompt"] [--num-beams 4]

The folder needs config.json, model.safetensors and tokenizer.json. A folder with
only spiece.model gets its tokenizer.json from transformers once:
``AutoTokenizer.from_pretrained(folder).save_pretrained(folder)``.
"""

import argparse
import os
import sys

import numpy as np

import minillm
from minillm.data.tokenizer import Tokenizer

p = argparse.ArgumentParser(description="T5 generation with minillm (the Hugging Face snippet).")
p.add_argument("folder", help="a Hugging Face T5 folder")
p.add_argument("prompt", nargs="?", default="translate English to German: The house is wonderful.")
p.add_argument("--num-beams", type=int, default=1)
p.add_argument("--max-new-tokens", type=int, default=40)
args = p.parse_args()

if not os.path.exists(os.path.join(args.folder, "tokenizer.json")):
    sys.exit(f"{args.folder}: no tokenizer.json (see this script's docstring to make one)")
tokenizer = Tokenizer.from_file(os.path.join(args.folder, "tokenizer.json"))
model = minillm.from_pretrained(args.folder)

input_ids = np.array([tokenizer.encode(args.prompt)])  # (1, S), ends with </s>
outputs = minillm.generate(model, input_ids, max_new_tokens=args.max_new_tokens, num_beams=args.num_beams)
print(tokenizer.decode(outputs[0], skip_special_tokens=True))
