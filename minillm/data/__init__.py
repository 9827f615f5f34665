"""Data: instruction examples and JSONL, encoding and batching, the tokenizer, the built-in tasks.

    examples.py    Example, load_jsonl / write_jsonl, group_by_task
    batching.py    encode_examples, collate, epoch_order, split_held_out
    tokenizer.py   Tokenizer (imports the ``tokenizers`` library; not imported here)
    tokenizer_config.py  tokenizer_config.json / special_tokens_map.json beside a tokenizer.json
    tasks/         the built-in task suite

This package's namespace re-exports ``examples`` and ``batching`` (NumPy only).
"""

from minillm.data.batching import (
    EncodedDataset,
    EncodeStats,
    batch_order,
    batches,
    collate,
    encode_examples,
    epoch_batches,
    epoch_order,
    num_batches,
    split_held_out,
)
from minillm.data.examples import (
    PROMPT_TEMPLATE,
    Example,
    format_prompt,
    group_by_task,
    load_jsonl,
    to_jsonl_lines,
    write_jsonl,
)
from minillm.ops.cross_entropy import IGNORE_INDEX

__all__ = [
    "IGNORE_INDEX", "PROMPT_TEMPLATE", "EncodeStats", "EncodedDataset", "Example", "batch_order",
    "batches", "collate", "encode_examples", "epoch_batches", "epoch_order", "format_prompt",
    "group_by_task", "load_jsonl", "num_batches", "split_held_out", "to_jsonl_lines", "write_jsonl",
]
