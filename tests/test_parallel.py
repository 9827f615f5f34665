"""Data parallelism (minillm.parallel): N ranks under mpiexec equal one process with --grad-accum N.

The pure parts (the launch detection, the split, the flat buffer, the one-process
world) run everywhere. The rest launch ``mpiexec -n 2`` (and 4, oversubscribed) in
a subprocess under a timeout, with one BLAS thread per rank, and compare with one
process: bit-identical parameters for 2 ranks (one sum of two numbers is the same
in either order), within 1e-6 relative for 4 (MPI's reduction tree re-associates
the sum). They skip when mpi4py or mpiexec is missing (``pip install -e ".[mpi]"``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

import minillm as minillm_lib
from minillm import parallel
from tests.conftest import start_folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
MPIEXEC = _beside if os.path.exists(_beside) else shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
                               reason="needs mpi4py and mpiexec (pip install -e '.[mpi]')")
TIMEOUT = 180
TRAIN = ["--preset", "tiny", "--steps", "4", "--dropout", "0.1", "--batch-size", "4", "--eval-every",
         "2", "--n-train", "32", "--n-eval", "8", "--no-progress", "--no-plot"]


# --------------------------------------------------------------------------- pure


@pytest.mark.parametrize("env, size", [
    ({}, 1), ({"PMI_SIZE": "4"}, 4), ({"OMPI_COMM_WORLD_SIZE": "2"}, 2), ({"PMI_SIZE": "1"}, 1),
    ({"SLURM_STEP_NUM_TASKS": "8"}, 8), ({"PMIX_RANK": "0"}, None),
    ({"SLURM_NTASKS": "8"}, 1),  # a batch script's shell: not a launched step
])
def test_the_launch_is_read_from_the_launchers_variables(env, size):
    assert parallel.launched_size(env) == size


def test_a_bad_size_variable_is_named():
    with pytest.raises(ValueError, match="PMI_SIZE='x'"):
        parallel.launched_size({"PMI_SIZE": "x"})


@pytest.mark.parametrize("n", [0, 1, 5, 8, 13])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shards_are_contiguous_balanced_and_cover_everything(n, size):
    parts = [parallel.shard(n, size, r) for r in range(size)]
    assert [i for p in parts for i in p] == list(range(n))
    lengths = [len(p) for p in parts]
    assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)
    with pytest.raises(ValueError):
        parallel.shard(n, size, size)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_flatten_then_unflatten_gives_the_tensors_back(dtype):
    rng = np.random.default_rng(0)
    shapes = {"b.weight": (3, 4), "a.weight": (5,), "c": (2, 1, 3)}
    tensors = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    names = sorted(tensors)
    buf = parallel.flatten(tensors, names, dtype)
    assert buf.shape == (12 + 5 + 6,) and buf.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(buf[:5], tensors["a.weight"])  # sorted order: a, b, c
    back = parallel.unflatten(buf, tensors, names)
    for k in tensors:
        assert back[k].shape == tensors[k].shape
        np.testing.assert_array_equal(back[k], tensors[k])
    with pytest.raises(ValueError, match="a buffer of"):
        parallel.unflatten(np.zeros(buf.size + 1, dtype), tensors, names)


def test_one_process_collectives_return_their_input():
    w = parallel.Single()
    grads = {"x": np.ones(3)}
    assert parallel.allreduce_grads(w, grads, grads) is grads
    assert w.gather_texts("é") == ["é"]
    np.testing.assert_array_equal(w.sum([1.5, 2.0]), [1.5, 2.0])
    with pytest.raises(KeyError) as raised, w.together():
        raise KeyError("bad")
    assert parallel.is_agreed(raised.value)  # raised at the block's end, as every rank would
    with pytest.raises(ZeroDivisionError):
        w.check(lambda: 1 / 0)
    assert w.on_root(lambda a, b=0: a + b, 1, b=2) == 3  # rank 0 of 1 runs it
    with pytest.raises(ValueError):
        w.on_root(int, "x")
    w.same("a", "x")


def test_together_lets_interrupts_through():
    """Ctrl-C and SystemExit are not errors for the ranks to agree on: they pass unmarked."""
    w = parallel.Single()
    for kind in (KeyboardInterrupt, SystemExit):
        with pytest.raises(kind) as raised, w.together():
            raise kind()
        assert not parallel.is_agreed(raised.value)


def test_on_root_runs_nothing_on_another_rank():
    class Rank1(parallel.Single):
        rank, size = 1, 2

    calls = []
    assert Rank1().on_root(calls.append, "x") is None and calls == []


def test_without_a_launcher_mpi4py_is_not_imported():
    code = ("import sys, minillm.parallel as p; w = p.get_world(); "
            "print(w.size, 'mpi4py' in sys.modules)")
    env = {k: v for k, v in os.environ.items()
           if k not in (*parallel.SIZE_VARIABLES, parallel.PMIX_VARIABLE)}
    env["PYTHONPATH"] = ROOT
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.stdout.split() == ["1", "False"], r.stderr


# --------------------------------------------------------------------------- under mpiexec


def _env():
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _run(cmd, cwd):
    """(returncode, stdout, stderr) of ``cmd``; its whole process group killed past the timeout."""
    p = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        out, err = p.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"{' '.join(cmd)} hung for {TIMEOUT} s")
    return p.returncode, out, err


def minillm(*args, cwd):
    return _run([sys.executable, "-m", "minillm", *args], cwd)


def mpi(n, *args, cwd):
    return _run([MPIEXEC, "-n", str(n), sys.executable, "-m", "minillm", *args], cwd)


def ok(result):
    rc, out, err = result
    assert rc == 0, err[-3000:]
    return out, err


def params(folder):
    return load_file(os.path.join(folder, "model.safetensors"))


def losses(folder):
    with open(os.path.join(folder, "metrics.jsonl"), encoding="utf-8") as f:
        return [(r["step"], r["kind"], r["loss"]) for r in map(json.loads, f)]


def same_params(a, b):
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)


@needs_mpi
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_two_ranks_train_bit_identically_to_grad_accum_two(tmp_path, dtype):
    _, err = ok(mpi(2, "train", *TRAIN, "--dtype", dtype, "--out", "par", cwd=tmp_path))
    ok(minillm("train", *TRAIN, "--dtype", dtype, "--grad-accum", "2", "--out", "one", cwd=tmp_path))
    same_params(tmp_path / "par", tmp_path / "one")
    assert losses(tmp_path / "par") == losses(tmp_path / "one")
    assert "2 ranks" in err and err.count("parameters (") == 1  # rank 0 alone speaks
    # the checkpoint is an ordinary one: one process loads it, in its dtype
    model = minillm_lib.from_pretrained(tmp_path / "par", dtype=dtype)
    np.testing.assert_array_equal(model.params["shared.weight"], params(tmp_path / "one")["shared.weight"])


@needs_mpi
def test_epochs_count_the_micro_batches_of_every_rank(tmp_path):
    """--epochs 1 of 32 examples in batches of 4 on 2 ranks: 4 steps of 2 batches, as --grad-accum 2."""
    at = TRAIN.index("--steps")
    common = TRAIN[:at] + TRAIN[at + 2:] + ["--epochs", "1"]
    ok(mpi(2, "train", *common, "--out", "par", cwd=tmp_path))
    ok(minillm("train", *common, "--grad-accum", "2", "--out", "one", cwd=tmp_path))
    state = json.loads((tmp_path / "par" / "trainer_state.json").read_text())
    assert state["train_config"]["steps"] == state["step"] == 4 and state["world_size"] == 2
    same_params(tmp_path / "par", tmp_path / "one")


@needs_mpi
def test_stop_after_then_resume_under_two_ranks_is_the_uninterrupted_run(tmp_path):
    ok(mpi(2, "train", *TRAIN, "--stop-after", "2", "--out", "run", cwd=tmp_path))
    ok(mpi(2, "train", "--resume", "--out", "run", "--no-progress", "--no-plot", cwd=tmp_path))
    ok(minillm("train", *TRAIN, "--grad-accum", "2", "--out", "one", cwd=tmp_path))
    same_params(tmp_path / "run", tmp_path / "one")
    # another number of ranks is refused in one line
    shutil.copytree(tmp_path / "run", tmp_path / "again")
    rc, _, err = minillm("train", "--resume", "--out", "again", "--steps", "6", "--no-progress",
                         cwd=tmp_path)
    assert rc == 2 and "trained on 2 rank(s)" in err and len(err.strip().splitlines()) == 1


@needs_mpi
def test_four_ranks_agree_with_grad_accum_four_to_rounding(tmp_path):
    ok(mpi(4, "train", *TRAIN, "--out", "par", cwd=tmp_path))
    ok(minillm("train", *TRAIN, "--grad-accum", "4", "--out", "one", cwd=tmp_path))
    pa, pb = params(tmp_path / "par"), params(tmp_path / "one")
    for k in pa:
        scale = float(np.abs(pb[k]).max())
        assert float(np.abs(pa[k] - pb[k]).max()) <= 1e-6 * scale, k


@needs_mpi
def test_bad_input_on_one_rank_stops_every_rank_with_one_message(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"prompt": f"say {i}", "completion": str(i)}) + "\n"
                            for i in range(40)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text() + "{not json\n")
    args = ["-m", "minillm", "train", "--preset", "tiny", "--steps", "2", "--no-progress", "--no-plot",
            "--out", "run"]
    # MPMD: rank 0 reads the good file, rank 1 the bad one (one COMM_WORLD)
    rc, out, err = _run([MPIEXEC, "-n", "1", sys.executable, *args, "--data", str(good), ":",
                         "-n", "1", sys.executable, *args, "--data", str(bad)], tmp_path)
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minillm train: error:") and "bad.jsonl" in lines[0]
    assert not (tmp_path / "run").exists()
    # ranks given different commands (another seed: another model and order) are refused
    rc, _, err = _run([MPIEXEC, "-n", "1", sys.executable, *args, "--data", str(good), ":",
                       "-n", "1", sys.executable, *args, "--data", str(good), "--seed", "1"], tmp_path)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "ranks disagree on the run" in err, err
    # the same bad file on both ranks: one message too
    rc, _, err = mpi(2, "train", "--preset", "tiny", "--steps", "2", "--data", str(bad), "--out", "r2",
                     "--no-progress", cwd=tmp_path)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err


@needs_mpi
@pytest.mark.parametrize("algo", [["--whiten"], ["--num-iterations", "2"],
                                  ["--algo", "grpo", "--num-iterations", "2", "--beta", "0.1"]])
def test_two_ranks_rl_bit_identically_to_grad_accum_two(tmp_path, algo):
    start = start_folder(tmp_path / "start", ["sort_words"], n_examples=60)
    args = ["rl", str(start), "--tasks", "sort_words", "--steps", "3", "--batch-size", "2", "--k", "2",
            "--n-train", "16", "--n-eval", "4", "--max-new-tokens", "4", "--eval-every", "0",
            "--entropy-coef", "0.05", *algo, "--no-progress"]
    ok(mpi(2, *args, "--out", "par", cwd=tmp_path))
    ok(minillm(*args, "--grad-accum", "2", "--out", "one", cwd=tmp_path))
    same_params(tmp_path / "par", tmp_path / "one")
    before, after = params(start), params(tmp_path / "par")
    assert any(not np.array_equal(before[k], after[k]) for k in before)  # the steps did move it
    read = [[json.loads(line) for line in open(tmp_path / d / "metrics.jsonl", encoding="utf-8")]
            for d in ("par", "one")]
    drop = ("step_s", "elapsed_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in read[0]] == \
           [{k: v for k, v in r.items() if k not in drop} for r in read[1]]


@needs_mpi
def test_eval_on_two_ranks_prints_the_one_process_json(tmp_path):
    ok(minillm("train", *TRAIN, "--out", "run", cwd=tmp_path))
    args = ["eval", "run", "--n", "20", "--batch-size", "4", "--max-new-tokens", "6", "--no-progress"]
    one, _ = ok(minillm(*args, "--predictions", "one.jsonl", cwd=tmp_path))
    par, err = ok(mpi(2, *args, "--predictions", "par.jsonl", cwd=tmp_path))
    a, b = json.loads(one), json.loads(par)
    assert a.pop("predictions") == "one.jsonl" and b.pop("predictions") == "par.jsonl"
    assert a == b
    assert (tmp_path / "one.jsonl").read_text() == (tmp_path / "par.jsonl").read_text()
