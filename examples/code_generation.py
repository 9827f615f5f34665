"""Code generation: a step-by-step description becomes a Python expression.

    python examples/code_generation.py [--steps 2000] [--out runs/code]

"take x, add 3, then multiply by y" -> "(x + 3) * y". Outputs are checked by
evaluating them (minillm.data.tasks.safe_eval: literals, arithmetic and the task's
names only; no calls, attributes or imports) on random values of x, y, z.
"""

import numpy as np
from _common import answer, parse_args, train_on_tasks

from minillm.data.tasks import TASKS
from minillm.data.tasks.safe_eval import SafeEvalError, safe_eval

if __name__ == "__main__":
    args = parse_args(__doc__, steps=2000, out="runs/code")
    model, tok = train_on_tasks(["code_expression"], args.steps, args.out, args.seed)
    ask = TASKS["code_expression"].instructions[0]
    prompts = [f"{ask}\ntake x, add 3, then multiply by y",
               f"{ask}\ntake z, subtract 5, then take it modulo 4"]
    rng = np.random.default_rng(0)
    for prompt, code in zip(prompts, answer(model, tok, prompts), strict=True):
        env = {v: int(rng.integers(-9, 10)) for v in "xyz"}
        try:
            value = safe_eval(code, env)
        except SafeEvalError as e:
            value = f"rejected ({e})"
        print(f"\n{prompt}\n  -> {code}    with {env}: {value}")
