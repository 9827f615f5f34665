"""``minillm generate``: decode prompts with a T5 folder, as transformers' ``generate`` would.

    minillm generate runs/sft "translate to French: forty-two"
    minillm generate runs/sft --num-beams 4 --num-return-sequences 2 "prompt one" "prompt two"
    cat prompts.txt | minillm generate runs/sft --do-sample --top-p 0.9 --seed 1

The folder needs config.json, model.safetensors and tokenizer.json. The prompts
are the arguments, or stdin's lines when none are given. Each prompt is encoded
with ``</s>`` appended (T5's convention); each output is decoded with the
special tokens skipped and printed on its own line (a newline inside an output
is written as ``\\n``), the sequences of a prompt one after the other.

The decoding options are transformers' ``GenerationConfig`` fields; their
defaults come from the folder's generation_config.json when it has one, then
from transformers' defaults. Flags override both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# flag dest -> generate() keyword; every one defaults to None ("not given")
OPTIONS = {
    "max_new_tokens": int, "min_new_tokens": int, "num_beams": int, "temperature": float,
    "top_k": int, "top_p": float, "length_penalty": float, "num_return_sequences": int,
    "repetition_penalty": float, "no_repeat_ngram_size": int,
}
# generation_config.json keys read as defaults (others are ignored)
FILE_KEYS = (*OPTIONS, "do_sample", "early_stopping", "eos_token_id", "pad_token_id",
             "max_length", "min_length")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``generate`` subcommand."""
    p = subparsers.add_parser(
        "generate", help="generate text for prompts with a T5 folder",
        description=__doc__.split("\n\n")[0] + " Prompts: the arguments, or stdin's lines.")
    p.add_argument("dir", metavar="DIR", help="a Hugging Face T5 folder with tokenizer.json")
    p.add_argument("prompts", metavar="PROMPT", nargs="*",
                   help="prompts (default: one per line from stdin)")
    g = p.add_argument_group("decoding (default: DIR/generation_config.json, else transformers')")
    for dest, kind in OPTIONS.items():
        g.add_argument("--" + dest.replace("_", "-"), dest=dest, type=kind, default=None)
    g.add_argument("--do-sample", action="store_true", default=None,
                   help="sample instead of greedy / beam search")
    g.add_argument("--early-stopping", choices=["true", "false", "never"], default=None,
                   help="beam search stopping rule")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts decoded together")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: run on a GPU through CuPy (the gpu extra)")
    p.set_defaults(func=run)
    return p


def generation_options(args: argparse.Namespace, folder: str) -> dict:
    """generate() keywords: generation_config.json's values, overridden by the flags given."""
    opts: dict = {}
    path = os.path.join(folder, "generation_config.json")
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                file_cfg = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
        opts = {k: file_cfg[k] for k in FILE_KEYS if file_cfg.get(k) is not None}
        # max_length / min_length count the decoder start token; *_new_tokens do not
        if "max_length" in opts:
            length = opts.pop("max_length")
            opts.setdefault("max_new_tokens", length - 1)
        if "min_length" in opts:
            length = opts.pop("min_length")
            if length > 0:
                opts.setdefault("min_new_tokens", length - 1)
    for dest in OPTIONS:
        if getattr(args, dest) is not None:
            opts[dest] = getattr(args, dest)
    if args.do_sample:
        opts["do_sample"] = True
    if args.early_stopping is not None:
        opts["early_stopping"] = {"true": True, "false": False}.get(args.early_stopping,
                                                                   args.early_stopping)
    return opts


def _read_prompts(args: argparse.Namespace) -> list[str]:
    if args.prompts:
        return list(args.prompts)
    return [line.rstrip("\r\n") for line in sys.stdin]


def run(args: argparse.Namespace) -> int:
    """Print one line per generated sequence; ValueError / FileNotFoundError on bad input."""
    import numpy as np

    import minillm
    from minillm.backend import to_numpy
    from minillm.cli import check_device
    from minillm.generation import generate

    check_device(args.device)
    folder = args.dir
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not a folder (expected a T5 folder with tokenizer.json)")
    tok_path = os.path.join(folder, "tokenizer.json")
    if not os.path.exists(tok_path):
        raise FileNotFoundError(f"{tok_path}: missing (minillm generate tokenizes with it)")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    opts = generation_options(args, folder)
    from minillm.data.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_file(tok_path)
    model = minillm.from_pretrained(folder, dtype=args.dtype, device=args.device)
    cfg = model.config
    eos = opts.get("eos_token_id", cfg.eos_token_id)
    eos = set(eos) if isinstance(eos, list) else {eos}
    rng = np.random.default_rng(args.seed) if opts.get("do_sample") else None
    prompts = _read_prompts(args)
    encoded = [tokenizer.encode(p, add_eos=True) for p in prompts]
    for ids in encoded:
        if max(ids, default=0) >= cfg.vocab_size:
            raise ValueError(f"the tokenizer gives id {max(ids)}, beyond the model's vocab_size "
                             f"{cfg.vocab_size}: tokenizer.json does not match the model")
    for start in range(0, len(encoded), args.batch_size):
        batch = encoded[start:start + args.batch_size]
        S = max(len(ids) for ids in batch)
        input_ids = np.full((len(batch), S), cfg.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(batch), S), dtype=np.int64)
        for b, ids in enumerate(batch):
            input_ids[b, :len(ids)] = ids
            mask[b, :len(ids)] = 1
        out = to_numpy(generate(model, input_ids, mask, rng=rng, **opts))  # host copy for decoding
        for row in out:
            gen = [int(i) for i in row[1:]]  # after the decoder start token
            cut = next((j for j, i in enumerate(gen) if i in eos), len(gen))
            text = tokenizer.decode(gen[:cut], skip_special_tokens=True)
            sys.stdout.write(text.replace("\n", "\\n") + "\n")
    sys.stdout.flush()
    return 0
