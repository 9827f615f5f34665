"""The probes of benchmarks/probe_inputs.py that feed data, flags, run folders, signals, rewards and
launchers (the model folder's files are in probes.py)."""

from __future__ import annotations

import json
import os

from probes import BIG, RL, TINY, json_file, probe

# ------------------------------------------------------------------ data and prompts


def _jsonl(path: str, lines) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    return path


GOOD = json.dumps({"prompt": "a b", "completion": "b a"})
BAD_LINES = {
    "a 100 MB line (issue)": '{"prompt": "' + "x" * (100 << 20) + '", "completion": "y"}',
    "a lone surrogate (issue)": '{"prompt": "a\\ud800", "completion": "b"}',
    "invalid UTF-8": b'{"prompt": "\xff", "completion": "b"}'.decode("latin-1"),
    "not an object": "[1, 2, 3]",
    "a 5000-digit number": '{"prompt": "a", "completion": "b", "task": 1' + "0" * 5000 + "}",
    "nested 100k deep": '{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "NaN": '{"prompt": NaN, "completion": "b"}',
    "a number as completion": '{"prompt": "a", "completion": 3}',
}
for _what, _line in BAD_LINES.items():
    def _prepare(ws, line=_line):
        path = ws.path("bad.jsonl")
        with open(path, "w", encoding="latin-1" if "\xff" in line else "utf-8",
                  errors="surrogatepass") as f:
            f.write(GOOD + "\n" + line + "\n")
        return ["train", "--data", path, *TINY, "--out", ws.path("r")]
    probe("data", f"--data with {_what}", names=("bad.jsonl, line 2",))(_prepare)

for _what, _target in (("/dev/zero", "/dev/zero"), ("a FIFO", "fifo"), ("a folder", "folder"),
                       ("a missing file", "missing"), ("an empty file", "empty"),
                       ("blank lines only", "blank")):
    for _flag in ("--data", "--eval-data"):
        def _prepare(ws, target=_target, flag=_flag):
            path = ws.path("d.jsonl")
            if target == "fifo":
                os.mkfifo(path)
            elif target == "folder":
                os.mkdir(path)
            elif target == "empty":
                open(path, "w").close()
            elif target == "blank":
                json_file(path, "\n  \n\t\n")
            elif target == "/dev/zero":
                path = "/dev/zero"
            args = ["--data", _jsonl(ws.path("ok.jsonl"), [GOOD] * 8)] if flag == "--eval-data" else []
            return ["train", *args, flag, path, *TINY, "--out", ws.path("r")]
        _named = "d.jsonl" if _target != "/dev/zero" else "/dev/zero"
        probe("data", f"train {_flag} {_what}", names=(_named,))(_prepare)


@probe("data", "eval --data /dev/zero (issue)", names=("/dev/zero",))
def _(ws):
    return ["eval", ws.model(), "--data", "/dev/zero"]


@probe("data", "rl --data a FIFO", names=("d.jsonl",))
def _(ws):
    os.mkfifo(ws.path("d.jsonl"))
    return ["rl", ws.model(), "--data", ws.path("d.jsonl"), "--reward", "exact_match", *RL[2:],
            "--out", ws.path("r")]


for _what, _maker in (("/dev/zero (issue)", None), ("a 2 MB line", lambda: b"x" * (2 << 20) + b"\n"),
                      ("invalid UTF-8", lambda: b"ok\n\xff\xfe\n")):
    def _prepare(ws, maker=_maker):
        if maker is None:
            ws.stdin = "/dev/zero"
        else:
            ws.stdin = ws.path("stdin.txt")
            json_file(ws.stdin, maker())
        return ["generate", ws.model()]
    probe("data", f"generate < {_what}", names=("stdin, line",))(_prepare)


@probe("data", "a million short lines, a 1-step run (issue)", expect=0,
       check=lambda ws, out, err: None if "drawn at random" in err else "read the whole file")
def _(ws):
    with open(ws.path("million.jsonl"), "w") as f:
        f.writelines(f'{{"prompt": "say {i}", "completion": "{i} said"}}\n' for i in range(10**6))
    return ["train", "--data", ws.path("million.jsonl"), "--steps", "1", "--preset", "tiny",
            "--no-progress", "--no-plot", "--out", ws.path("r")]


# ------------------------------------------------------------------ settings

TRAIN_FLAGS = {"--n-train": BIG, "--n-eval": BIG, "--grad-accum": BIG, "--batch-size": BIG,
               "--steps": BIG, "--vocab-size": BIG, "--max-source-len": BIG, "--max-target-len": BIG,
               "--eval-every": BIG, "--warmup-steps": BIG, "--seed": BIG, "--stop-after": BIG,
               "--epochs": "1e308"}
for _flag, _value in TRAIN_FLAGS.items():
    def _prepare(ws, flag=_flag, value=_value):
        return ["train", "--preset", "tiny", "--out", ws.path("r"), flag, value]
    _issue = (" (issue)" if _flag in ("--n-train", "--n-eval", "--grad-accum", "--epochs", "--vocab-size")
              else "")
    probe("settings", f"train {_flag} {_value}{_issue}", names=(_flag,))(_prepare)

for _flag, _value in (("--lr", "nan"), ("--lr", "-1"), ("--dropout", "1"), ("--epochs", "0"),
                      ("--weight-decay", "inf"), ("--steps", "-3"), ("--seed", "-1"),
                      ("--max-source-len", "1"), ("--threads", "0"), ("--position-bias-lr-scale", "0")):
    def _prepare(ws, flag=_flag, value=_value):
        return ["train", "--preset", "tiny", "--out", ws.path("r"), flag, value]
    probe("settings", f"train {_flag} {_value}")(_prepare)


@probe("settings", "train --lr 1e308: the run stops (exit 1), step 0 kept", expect=1, names=("step 0",))
def _(ws):
    return ["train", *TINY, "--lr", "1e308", "--out", ws.path("r")]


RL_FLAGS = {"--k": BIG, "--num-iterations": BIG, "--batch-size": BIG, "--grad-accum": BIG,
            "--max-new-tokens": BIG, "--n-train": BIG, "--n-eval": BIG, "--steps": BIG,
            "--top-k": BIG, "--top-p": "0", "--temperature": "0", "--epsilon": "1e400",
            "--max-source-len": BIG}
for _flag, _value in RL_FLAGS.items():
    def _prepare(ws, flag=_flag, value=_value):
        return ["rl", ws.model(), "--tasks", "reverse_words", "--out", ws.path("r"), flag, value]
    probe("settings", f"rl {_flag} {_value}")(_prepare)

GENERATE_FLAGS = (("--num-beams", BIG), ("--num-beams", "1000000"), ("--num-return-sequences", "1000000"),
                  ("--batch-size", BIG), ("--max-source-len", BIG), ("--max-new-tokens", "1000000000"),
                  ("--temperature", "0"), ("--length-penalty", "1e308"), ("--seed", "-1"),
                  ("--seed", str(2**64)), ("--top-p", "2"), ("--min-new-tokens", "-1"))
for _flag, _value in GENERATE_FLAGS:
    def _prepare(ws, flag=_flag, value=_value):
        extra = ["--do-sample"] if flag in ("--num-return-sequences", "--temperature") else []
        extra += ["--num-beams", "3"] if flag == "--length-penalty" else []
        return ["generate", ws.model(), *extra, flag, value, "hello"]
    _issue = " (issue)" if _flag == "--length-penalty" else ""
    probe("settings", f"generate {_flag} {_value}{_issue}")(_prepare)

for _field, _value in (("num_beams", 10**6), ("num_return_sequences", 10**6), ("max_new_tokens", 10**9),
                       ("length_penalty", 1e308), ("eos_token_id", []), ("eos_token_id", [10**9]),
                       ("repetition_penalty", 10**400), ("temperature", "hot")):
    def _prepare(ws, field=_field, value=_value):
        m = ws.model()
        changes = {field: value, "num_beams": 3} if field in ("length_penalty", "num_return_sequences") \
            else {field: value}
        path = os.path.join(m, "generation_config.json")
        with open(path) as f:
            doc = {**json.load(f), **changes}
        json_file(path, json.dumps(doc))
        return ["generate", m, "hello"]
    _issue = " (issue)" if _field in ("num_beams", "eos_token_id") and _value in (10**6, []) else ""
    probe("settings", f"generation_config {_field} {str(_value)[:12]}{_issue}")(_prepare)

for _flag, _value in (("--n", BIG), ("--num-beams", BIG), ("--batch-size", BIG), ("--max-new-tokens", BIG),
                      ("--seed", "-1"), ("--length-penalty", "1e308")):
    def _prepare(ws, flag=_flag, value=_value):
        extra = ["--num-beams", "3"] if flag == "--length-penalty" else []
        return ["eval", ws.model(), *extra, flag, value]
    probe("settings", f"eval {_flag} {_value}")(_prepare)


@probe("settings", "data --n 10**20", names=("--n",))
def _(ws):
    return ["data", "--n", BIG]
