"""Every input bounded (issue 28): each file read by one rule, each setting bounded, each refusal one line.

The failures the issue lists, each as a test: a FIFO or /dev/zero (or a 2 GB file) in
place of a model folder's JSON files, /dev/zero as data or as stdin, a JSONL line of
over 1 MiB, a lone surrogate, counts of 10**20, num_beams 10**6, eos_token_id [],
length_penalty 1e308, a tokenizer.json whose regex runs away. Every refusal is exit
status 2 and one line naming the file, line, field or flag, read within a second: the
hang probes run under an alarm, so a regression fails instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal

import numpy as np
import pytest

from minillm.cli import main
from minillm.data.jsonl_index import index_lines
from minillm.storage.reading import LIMITS, MAX_LINE, open_input, read_input, read_lines
from minillm.workflows.run_data import count_train, data_sample, load_run_data
from tests.conftest import start_folder

JSON_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json")


@contextlib.contextmanager
def deadline(seconds: int = 5):
    """Fail (TimeoutError) rather than hang when the block blocks: a FIFO read, an endless stream."""
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def one_line(capfd, command: str) -> str:
    """The one error line a refused command wrote (file descriptor 2: Rust's panic lines count too)."""
    err = capfd.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith(f"minillm {command}: error: ")]
    assert len(errors) == 1 and errors[0] == err[-1], err
    assert not any("Traceback" in line or "panicked" in line for line in err), err
    return errors[0]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return start_folder(tmp_path_factory.mktemp("model") / "hf", ["reverse_words", "uppercase"], 120)


@pytest.fixture()
def local(model, tmp_path):
    """A copy of the model folder to spoil."""
    return shutil.copytree(model, tmp_path / "m")


def jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


# --------------------------------------------------------------------------- the one rule


def test_the_rule_refuses_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with deadline():
        for path, kind in ((fifo, "a FIFO"), ("/dev/zero", "a device"), (tmp_path, "a folder")):
            with pytest.raises(ValueError, match=f"{kind}, not a regular file"):
                read_input(path, LIMITS["config"])
    with pytest.raises(FileNotFoundError, match="missing"):
        open_input(tmp_path / "nope")


def test_a_folders_file_stays_in_it_except_in_a_hub_snapshot(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        read_input(folder / "config.json", LIMITS["config"], folder)
    assert read_input(folder / "config.json", LIMITS["config"]) == b"{}"  # a path of the user's own
    (folder / "inner.json").write_text("[]")
    (folder / "alias.json").symlink_to(folder / "inner.json")
    assert read_input(folder / "alias.json", LIMITS["config"], folder) == b"[]"
    repo = tmp_path / "models--t5" / "snapshots" / "abc"  # the hub's cache: snapshot -> blobs
    (repo.parent.parent / "blobs").mkdir(parents=True)
    repo.mkdir(parents=True)
    (repo.parent.parent / "blobs" / "f00d").write_text("{}")
    (repo / "config.json").symlink_to("../../blobs/f00d")
    assert read_input(repo / "config.json", LIMITS["config"], repo) == b"{}"


def test_a_file_larger_than_its_kind_is_refused_from_its_size(tmp_path):
    big = tmp_path / "config.json"
    with open(big, "wb") as f:
        f.truncate(2 << 30)  # sparse: 2 GB that take no disk
    with pytest.raises(ValueError, match="2,147,483,648 bytes, more than such a file can be"):
        read_input(big, LIMITS["config"])


def test_a_stream_stops_at_the_first_line_over_the_limit():
    with deadline(), open("/dev/zero", "rb") as zeros:
        with pytest.raises(ValueError, match="stdin, line 1: longer than 1,048,576 bytes"):
            next(read_lines(zeros, "stdin"))


# --------------------------------------------------------------------------- a model folder's files


def test_a_fifo_as_config_json_is_refused_at_once(local, capfd):
    os.remove(local / "config.json")
    os.mkfifo(local / "config.json")
    with deadline():
        assert main(["generate", str(local), "hello"]) == 2
    assert "config.json: a FIFO, not a regular file" in one_line(capfd, "generate")


@pytest.mark.parametrize("name", JSON_FILES)
@pytest.mark.parametrize("how", ["/dev/zero", "2 GB"])
def test_an_endless_or_huge_json_file_is_refused(local, capfd, name, how):
    path = local / name
    if os.path.lexists(path):
        os.remove(path)
    if how == "/dev/zero":
        path.symlink_to("/dev/zero")
    else:
        with open(path, "wb") as f:
            f.truncate(2 << 30)
    with deadline():
        assert main(["generate", str(local), "hello"]) == 2
    line = one_line(capfd, "generate")  # a link out of the folder, or more bytes than JSON of its kind
    assert name in line and ("a link to /dev/zero, outside" in line or "more than such a file can be" in line)


@pytest.mark.parametrize("field, value, words", [
    ("num_beams", 10**6, "need"), ("eos_token_id", [], "non-empty"),
    ("length_penalty", 1e308, "length_penalty must be at most")])
def test_generation_config_values_beyond_the_machine_are_refused(local, capfd, field, value, words):
    cfg = json.loads((local / "generation_config.json").read_text())
    cfg.update({"num_beams": 3, field: value})  # beam search, where length_penalty counts
    (local / "generation_config.json").write_text(json.dumps(cfg))
    assert main(["generate", str(local), "hello"]) == 2
    assert words in one_line(capfd, "generate")


def test_an_empty_eos_list_in_config_json_is_one_line(local, capfd):
    cfg = json.loads((local / "config.json").read_text())
    (local / "config.json").write_text(json.dumps({**cfg, "eos_token_id": []}))
    assert main(["generate", str(local), "hello"]) == 2
    assert "config.json: config field 'eos_token_id' is an empty list" in one_line(capfd, "generate")


@pytest.mark.parametrize("where", ["normalizer", "pre_tokenizer"])
def test_a_runaway_regex_in_tokenizer_json_is_one_line(local, capfd, where):
    doc = json.loads((local / "tokenizer.json").read_text(encoding="utf-8"))
    doc[where] = ({"type": "Replace", "pattern": {"Regex": "(a+)+$"}, "content": "x"} if where == "normalizer"
                  else {"type": "Split", "pattern": {"Regex": "(a+)+$"}, "behavior": "Isolated",
                        "invert": False})
    (local / "tokenizer.json").write_text(json.dumps(doc), encoding="utf-8")
    assert main(["generate", str(local), "a" * 40 + "b"]) == 2
    assert "tokenizer.json: the tokenizers library failed on a text" in one_line(capfd, "generate")


# --------------------------------------------------------------------------- data and prompts


def test_dev_zero_as_data_or_stdin_is_refused(model, capfd, monkeypatch):
    with deadline():
        assert main(["eval", str(model), "--data", "/dev/zero"]) == 2
    assert "/dev/zero: a device, not a regular file" in one_line(capfd, "eval")

    class Stdin:
        buffer = open("/dev/zero", "rb")  # noqa: SIM115 - closed below

    monkeypatch.setattr("sys.stdin", Stdin)
    try:
        with deadline():
            assert main(["generate", str(model)]) == 2
    finally:
        Stdin.buffer.close()
    assert "stdin, line 1: longer than 1,048,576 bytes" in one_line(capfd, "generate")


def test_a_jsonl_line_over_the_limit_or_with_a_lone_surrogate_names_its_line(tmp_path, capfd):
    long = tmp_path / "long.jsonl"
    long.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "' + "x" * MAX_LINE + '"}\n')
    assert main(["train", "--data", str(long), "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    assert f"{long}, line 2: longer than 1,048,576 bytes" in one_line(capfd, "train")
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a\\ud800", "completion": "b"}\n')
    assert main(["train", "--data", str(odd), "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    assert f"{odd}, line 2: 'prompt' holds a lone surrogate" in one_line(capfd, "train")
    assert not (tmp_path / "r").exists()


def test_a_run_reads_only_the_examples_its_steps_draw(tmp_path):
    """Counted, not parsed: a line never drawn is never read, so a garbage one there goes unseen."""
    records = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(400)]
    path = tmp_path / "big.jsonl"
    jsonl(path, records)
    run = {"data": str(path), "eval_data": None, "seed": 0, "n_eval": None, "data_sample": None}
    assert count_train(run) == 380 and data_sample(run, 380) is None  # 5% (20) held out
    run["data_sample"] = data_sample(run, 32)
    train, held = load_run_data(run, "sft_data")
    assert run["data_sample"] == len(train) == 32 and len(held) == 20
    used = {int(ex.prompt[1:]) for ex in train + held}
    spoilt = next(i for i in range(400) if i not in used)
    lines = path.read_text().splitlines()
    lines[spoilt] = "not json at all"
    path.write_text("\n".join(lines) + "\n")
    again, held_again = load_run_data(run, "sft_data")
    assert [ex.prompt for ex in again] == [ex.prompt for ex in train]  # the same draw, line unseen
    assert len(index_lines(path)) == 400


@pytest.mark.slow
def test_a_one_step_run_on_a_million_lines_is_quick_and_small(tmp_path):
    """The issue's case: 73 s and 2.9 GB before a 1-step run; now seconds and under 500 MB."""
    import resource
    import subprocess
    import sys
    import time

    path = tmp_path / "million.jsonl"
    with open(path, "w") as f:
        f.writelines(f'{{"prompt": "say {i}", "completion": "{i} said"}}\n' for i in range(10**6))
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "minillm", "train", "--data", str(path), "--steps", "1",
                           "--preset", "tiny", "--no-progress", "--no-plot", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    seconds = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr
    assert "16 training examples drawn at random" in done.stderr
    assert seconds < 30 and resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 500 * 1024


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("flag, value", [("--n-train", "100000000000000000000"),
                                         ("--n-eval", "100000000000000000000"),
                                         ("--grad-accum", "100000000000000000000"),
                                         ("--vocab-size", "100000000000000000000"),
                                         ("--epochs", "1e308"), ("--steps", "100000000000000000000"),
                                         ("--max-source-len", "100000000000"), ("--seed", str(2**60))])
def test_counts_beyond_the_machine_are_refused_naming_the_flag(tmp_path, capfd, flag, value):
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "r"), flag, value]) == 2
    line = one_line(capfd, "train")
    assert f"{flag} must be" in line and "at most" in line
    assert not (tmp_path / "r").exists()


def test_generate_bounds_its_own_flags(model, capfd):
    for flags, words in ((["--num-beams", "1000000"], "need"),
                         (["--num-return-sequences", "1000000", "--do-sample"], "need"),
                         (["--num-beams", "3", "--length-penalty", "1e308"], "length_penalty"),
                         (["--batch-size", "100000000"], "--batch-size must be in")):
        assert main(["generate", str(model), *flags, "hello"]) == 2
        assert words in one_line(capfd, "generate")


def test_a_huge_repetition_penalty_decodes_without_a_warning(model, capfd):
    assert main(["generate", str(model), "--repetition-penalty", "1e308", "hello"]) == 0
    assert capfd.readouterr().err == ""


def test_safetensors_holding_more_than_the_model_is_refused_from_its_header(local, capfd):
    """A sparse 4 GB tensor in model.safetensors: refused before a byte of it is read."""
    from minillm.storage.safetensors_file import write_safetensors

    big = local / "model.safetensors"
    write_safetensors(big, {"shared.weight": np.zeros(4, np.float32)})
    raw = big.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["shared.weight"].update(shape=[1 << 30], data_offsets=[0, 4 << 30])
    text = json.dumps(header).encode()
    with open(big, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        f.truncate(8 + len(text) + (4 << 30))
    with deadline():
        assert main(["generate", str(local), "hello"]) == 2
    assert "bytes of tensors, more than its model can hold" in one_line(capfd, "generate")
