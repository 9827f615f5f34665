"""Text transformations: reverse, sort, uppercase, count the items, pick the largest number.

    python examples/text_transformation.py [--steps 2500] [--out runs/text]

One model, five instructions; each prompt says which transformation to apply.
"""

from _common import parse_args, show, train_on_tasks

from minillm.data.tasks import TASKS

NAMES = ["reverse_words", "sort_words", "uppercase", "count_words", "largest_number"]

if __name__ == "__main__":
    args = parse_args(__doc__, steps=2500, out="runs/text")
    model, tok = train_on_tasks(NAMES, args.steps, args.out, args.seed)
    inputs = ["red fox book lamp", "tree cat owl", "blue star key", "cup, hat, pen", "12, 87, 45"]
    show(model, tok, [f"{TASKS[t].instructions[0]}\n{x}" for t, x in zip(NAMES, inputs, strict=True)])
