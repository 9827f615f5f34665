"""Fine-tune a local FLAN-T5 folder on your JSONL, evaluate it, ask it: three calls of minillm.workflows.

    python examples/finetune_flan_t5.py --model path/to/flan-t5-small --data train.jsonl \\
        [--eval-data eval.jsonl] [--steps 200] [--out runs/flan-t5] [--prompt "..."]

``--data`` is JSONL, one example a line: {"instruction", "input", "output"} (Alpaca) or
{"prompt", "completion"}; without it a small file of minillm's built-in tasks is written
and used. The three calls are ``train(TrainSettings(init=FOLDER, data=...))``,
``evaluate(EvalSettings(dir=...))`` and ``generate(GenerateSettings(dir=..., prompts=...))``;
the run folder (``--out``) is a Hugging Face folder that transformers loads too, its best
model in ``--out``/best (stored in ``--save-dtype``, e.g. bfloat16, when given).

The folder is any T5 folder with config.json, model.safetensors (float32, float16 or
bfloat16; sharded too) and tokenizer.json: flan-t5-small / -base as downloaded, or one of
yours. No FLAN-T5 at hand (nothing is downloaded here)? Write a random-weight folder of
its real shape first, with transformers (needed for this only) and a T5-layout tokenizer
trained on the data, then fine-tune it briefly:

    python examples/finetune_flan_t5.py --make-random-folder runs/flan-t5-random --steps 2

(flan-t5-small: 8+8 layers, d_model 512, 6 heads of 64, d_ff 1024, gated-gelu, untied,
32128 rows; 77M parameters. ``--size flan-t5-base`` makes flan-t5-base's shape: 12+12
layers, d_model 768, 12 heads, d_ff 2048; 248M. ``--size tiny`` makes a small one of the
same layout.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import minillm  # noqa: F401 - the library the three calls come from
from minillm.workflows import (
    DataSettings,
    EvalSettings,
    GenerateSettings,
    TrainSettings,
    evaluate,
    generate,
    make_data,
    train,
)

SIZES = {  # transformers T5Config fields of each random folder
    "flan-t5-small": dict(d_model=512, d_kv=64, num_heads=6, d_ff=1024, num_layers=8,
                          num_decoder_layers=8, vocab_size=32128),
    "flan-t5-base": dict(d_model=768, d_kv=64, num_heads=12, d_ff=2048, num_layers=12,
                         num_decoder_layers=12, vocab_size=32128),
    "tiny": dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, num_decoder_layers=2,
                 vocab_size=None),  # None: the tokenizer's size rounded up to a multiple of 128
}
FLAN = dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, relative_attention_num_buckets=32,
            relative_attention_max_distance=128, dropout_rate=0.1, decoder_start_token_id=0,
            pad_token_id=0, eos_token_id=1)
DEMO_TASKS = ("sort_words", "reverse_words")
PROMPTS = ["Put these words in alphabetical order.\nowl pear ball",
           "Write the words in reverse order.\nred box owl"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--model", metavar="DIR", help="the FLAN-T5 (or any T5) folder to fine-tune")
    p.add_argument("--make-random-folder", metavar="DIR",
                   help="first write a random-weight folder of --size there (needs transformers), "
                   "and fine-tune it")
    p.add_argument("--size", choices=list(SIZES), default="flan-t5-small",
                   help="shape of --make-random-folder (default: %(default)s)")
    p.add_argument("--data", metavar="FILE.jsonl", help="training data (default: built-in tasks)")
    p.add_argument("--eval-data", metavar="FILE.jsonl", help="held-out data (default: 5%% of --data)")
    p.add_argument("--out", default=os.path.join("runs", "flan-t5"), help="the run folder")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4, help="peak AdamW learning rate")
    p.add_argument("--warmup-steps", type=int, default=None, help="default: a tenth of --steps")
    p.add_argument("--max-source-len", type=int, default=128)
    p.add_argument("--max-target-len", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=32, help="evaluation and generation")
    p.add_argument("--save-dtype", choices=("float32", "float16", "bfloat16"), default=None,
                   help="store the best model in this dtype (default: float32)")
    p.add_argument("--prompt", action="append", help="a prompt to ask at the end (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not (args.model or args.make_random_folder):
        p.error("give --model DIR (a T5 folder) or --make-random-folder DIR")
    return args


def t5_tokenizer_json(texts: list[str], path: str, vocab_size: int = 2000) -> int:
    """Train a Unigram tokenizer.json in the layout of Google's T5 files; its number of tokens.

    <pad>=0, </s>=1, <unk>=2; NFKC (where Google's files hold SentencePiece's Precompiled
    nmt_nfkc map), WhitespaceSplit + Metaspace("▁"); </s> appended by the post-processor; the
    100 sentinels <extra_id_99> .. <extra_id_0> at the top of the vocabulary.
    """
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(),
         pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens([AddedToken(f"<extra_id_{i}>", normalized=False) for i in range(99, -1, -1)])
    tok.post_processor = processors.TemplateProcessing(
        single=["$A", "</s>"], pair=["$A", "</s>", "$B", "</s>"], special_tokens=[("</s>", 1)])
    tok.save(path)
    return tok.get_vocab_size(with_added_tokens=True)


def make_random_folder(folder: str, size: str, texts: list[str], seed: int = 0) -> None:
    """A FLAN-T5-shaped folder with random weights, written by transformers (safetensors)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5TokenizerFast

    os.makedirs(folder, exist_ok=True)
    n = t5_tokenizer_json(texts, os.path.join(folder, "tokenizer.json"))
    T5TokenizerFast(tokenizer_file=os.path.join(folder, "tokenizer.json")).save_pretrained(folder)
    shape = dict(SIZES[size])
    shape["vocab_size"] = shape["vocab_size"] or (n // 128 + 1) * 128
    if shape["vocab_size"] < n:
        raise ValueError(f"{size}: {shape['vocab_size']} model rows for a tokenizer of {n}")
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(T5Config(**shape, **FLAN))
    if model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr():
        # transformers 5 always ties them (its config forces tie_word_embeddings); FLAN-T5's are two
        # matrices, each initialised N(0, 1) by T5
        model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight))
    model.save_pretrained(folder)
    print(f"{folder}: random {size} ({sum(p.numel() for p in model.parameters()):,} parameters), "
          f"tokenizer of {n} tokens for {shape['vocab_size']} rows")


def texts_of(path: str) -> list[str]:
    """Every string value of a JSONL file (prompts and targets), to train a tokenizer on."""
    with open(path, encoding="utf-8") as f:
        return [v for line in f if line.strip() for v in json.loads(line).values() if isinstance(v, str)]


def main(argv=None) -> int:
    args = parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    data, eval_data = args.data, args.eval_data
    if data is None:  # a small file of built-in tasks, beside the run folder
        stem = args.out.rstrip(os.sep) + "-demo"
        data, eval_data = f"{stem}-train.jsonl", eval_data or f"{stem}-eval.jsonl"
        make_data(DataSettings(task=DEMO_TASKS, n=400, split="train", seed=args.seed, out=data))
        make_data(DataSettings(task=DEMO_TASKS, n=16, split="eval", seed=args.seed, out=eval_data))
        print(f"no --data: built-in tasks {', '.join(DEMO_TASKS)} written to {data} and {eval_data}")
    model_dir = args.model
    if args.make_random_folder:
        make_random_folder(args.make_random_folder, args.size, texts_of(data), args.seed)
        model_dir = args.model or args.make_random_folder

    # 1. fine-tune (the run folder is a Hugging Face folder; its best model in OUT/best)
    result = train(TrainSettings(
        init=model_dir, data=data, eval_data=eval_data, out=args.out, overwrite=args.overwrite,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        warmup_steps=args.warmup_steps if args.warmup_steps is not None else args.steps // 10,
        max_source_len=args.max_source_len, max_target_len=args.max_target_len, eval_every=0,
        seed=args.seed, save_dtype=args.save_dtype, no_progress=args.no_progress, no_plot=True))
    best = result.best_dir or result.out
    print(f"fine-tuned {result.step} steps in {result.seconds:.0f} s; best model: {best}")

    # 2. evaluate the best model on the held-out data
    scores = evaluate(EvalSettings(dir=best, data=eval_data, max_new_tokens=args.max_new_tokens,
                                   max_source_len=args.max_source_len, no_progress=args.no_progress))
    print("held-out: " + ", ".join(f"{k} {scores[k]:.4f}" for k in ("exact_match", "bleu", "rougeL", "loss")
                                   if isinstance(scores.get(k), float)))

    # 3. ask it
    prompts = args.prompt or PROMPTS
    outputs = generate(GenerateSettings(dir=best, prompts=prompts, max_new_tokens=args.max_new_tokens))
    for prompt, output in zip(prompts, outputs, strict=True):
        print(f"{prompt!r} -> {output!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
