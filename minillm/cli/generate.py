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
from transformers' defaults. Flags override both. The work is
:func:`minillm.workflows.generate` (``GenerateSettings`` has a field per flag).
"""

from __future__ import annotations

import argparse
import sys

from minillm.cli.flags import add_threads_flag, finite, settings_from
from minillm.storage.reading import text_lines
from minillm.workflows import GenerateSettings
from minillm.workflows.generate import DEFAULT_MAX_SOURCE_LEN, OPTIONS, iter_generate


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
        g.add_argument("--" + dest.replace("_", "-"), dest=dest, type=finite if kind is float else kind,
                       default=None)
    g.add_argument("--do-sample", action="store_true", default=None,
                   help="sample instead of greedy / beam search")
    g.add_argument("--early-stopping", choices=["true", "false", "never"], default=None,
                   help="beam search stopping rule")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts decoded together")
    p.add_argument("--max-source-len", type=int, default=DEFAULT_MAX_SOURCE_LEN,
                   help="prompts are cut to this many tokens, </s> kept (default %(default)s; "
                        "the count is printed)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: run on a GPU through CuPy (the gpu extra)")
    add_threads_flag(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Print one line per generated sequence, batch by batch (:func:`minillm.workflows.generate`)."""
    stdin = getattr(sys.stdin, "buffer", sys.stdin)  # its bytes (a text stream in tests)
    prompts = tuple(args.prompts) or text_lines(stdin, "stdin")  # read lazily, 1 MiB a line at most
    for text in iter_generate(settings_from(GenerateSettings, args, prompts=prompts)):
        sys.stdout.write(text.replace("\n", "\\n") + "\n")
    sys.stdout.flush()
    return 0
