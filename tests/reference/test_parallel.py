"""A data-parallel run's checkpoint (mpiexec -n 2 minillm train) loads in transformers.

Skips without transformers, or without mpi4py and mpiexec (the mpi extra).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import minillm

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
MPIEXEC = _beside if os.path.exists(_beside) else shutil.which("mpiexec")


@pytest.mark.skipif(MPIEXEC is None or importlib.util.find_spec("mpi4py") is None,
                    reason="needs mpi4py and mpiexec (pip install -e '.[mpi]')")
def test_transformers_loads_a_two_rank_run(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    r = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "minillm", "train", "--preset", "tiny",
                        "--steps", "3", "--batch-size", "4", "--n-train", "32", "--n-eval", "4",
                        "--eval-every", "0", "--no-progress", "--no-plot", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, env=env, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    ours = minillm.from_pretrained(tmp_path / "run")
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "run").eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(2, ours.config.vocab_size, (2, 7))
    labels = rng.integers(2, ours.config.vocab_size, (2, 5))
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids), labels=torch.tensor(labels)).logits.numpy()
    np.testing.assert_allclose(ours.logits(ids, ours.shift_right(labels)), ref, rtol=1e-3, atol=1e-4)
