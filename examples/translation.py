"""Translation: numbers (0-999) into English and French words, learned from scratch.

    python examples/translation.py [--steps 2000] [--out runs/translation]

French has real rules here (soixante-dix, quatre-vingts, vingt et un, cent/cents),
and held-out numbers are ones the model never saw. A few minutes on a laptop CPU.
"""

from _common import parse_args, show, train_on_tasks

from minillm.data.tasks import TASKS

if __name__ == "__main__":
    args = parse_args(__doc__, steps=2000, out="runs/translation")
    model, tok = train_on_tasks(["number_to_english", "number_to_french"], args.steps, args.out,
                                args.seed)
    english, french = (TASKS[t].instructions[0] for t in ("number_to_english", "number_to_french"))
    show(model, tok, [f"{english}\n482", f"{french}\n71", f"{french}\n280"])
