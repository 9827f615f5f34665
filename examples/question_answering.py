"""Question answering over a short context: "how many <item>?", looked up among two facts.

    python examples/question_answering.py [--steps 1500] [--out runs/qa]

The answer is in the context; the model learns to find it (an extractive reader).
"""

from _common import parse_args, show, train_on_tasks

from minillm.data.tasks import TASKS

if __name__ == "__main__":
    args = parse_args(__doc__, steps=1500, out="runs/qa")
    model, tok = train_on_tasks(["qa"], args.steps, args.out, args.seed)
    ask = TASKS["qa"].instructions[0]
    show(model, tok, [
        f"{ask}\nEmma has 4 apples. Hugo has 7 books. Question: How many books?",
        f"{ask}\nIris has 2 coins. Ben has 9 pears. Question: How many coins?",
    ])
