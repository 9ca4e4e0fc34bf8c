"""CUDA-only paths of the trainer (skipped without a GPU; run them on one before a full run).

Each test fails, rather than passing quietly, if CUDA-graph capture fell back to eager.
"""

import warnings

import pytest
import torch

from helpers.metrics import ieee_fp32
from helpers.train import GraphedStep, TrainConfig, make_step, train
from tests.test_train import fresh

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CFG = TrainConfig(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0.5, bf16=False)
CUDA = torch.device("cuda")


def cuda_model(seed=0):
    return fresh(seed).to(CUDA).to(memory_format=torch.channels_last).train()


def test_capture_leaves_the_model_as_it_was():
    model = cuda_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    GraphedStep(model, CFG, CUDA, None, CFG.batch_size)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("with_teacher", [False, True])
def test_the_graphed_step_is_used(bf16, with_teacher):
    """make_step must capture (no eager fallback) with and without bf16 and a teacher."""
    cfg = TrainConfig(**{**CFG.__dict__, "bf16": bf16})
    teacher = cuda_model(1).eval() if with_teacher else None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fallback announces itself with a warning
        step = make_step(cuda_model(), cfg, CUDA, teacher)
    assert isinstance(step, GraphedStep)


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("with_teacher", [False, True])
def test_graphed_training_matches_eager(tiny_splits, bf16, with_teacher):
    """The graph runs the same steps as eager code: equal weights after training, to rounding.

    fp32 runs in IEEE fp32 here: with cuDNN's default TF32 convolutions (10 mantissa bits),
    eager and graphed runs may pick different kernels whose TF32 roundings differ by ~1e-3 per
    step, and 2 epochs compound that past any tolerance that would still catch a wrong step
    (seen on an H200: 3e-3 apart with a teacher).
    """
    runs = []
    for graph in (False, True):
        model = fresh()
        cfg = TrainConfig(**{**CFG.__dict__, "cuda_graph": graph, "bf16": bf16})
        with warnings.catch_warnings(), ieee_fp32():
            warnings.simplefilter("error", UserWarning)
            train(model, tiny_splits, cfg, device="cuda", progress=False,
                  teacher=fresh(1) if with_teacher else None)
        runs.append(model.state_dict())
    tol = {"rtol": 2e-2, "atol": 2e-3} if bf16 else {"rtol": 1e-3, "atol": 1e-4}
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k].float(), runs[1][k].float(), **tol)


def test_training_restores_cudnn_benchmark(tiny_splits):
    torch.backends.cudnn.benchmark = False
    train(fresh(), tiny_splits, CFG, device="cuda", progress=False)
    assert torch.backends.cudnn.benchmark is False
