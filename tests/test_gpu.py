"""CUDA-only paths of the trainer (skipped without a GPU; run them on one before a full run)."""

import pytest
import torch

from helpers.train import GraphedStep, TrainConfig, train
from tests.test_train import fresh

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
CFG = TrainConfig(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0.5, bf16=False)


def test_capture_leaves_the_model_as_it_was():
    model = fresh().cuda().to(memory_format=torch.channels_last).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    GraphedStep(model, CFG, torch.device("cuda"), None, CFG.batch_size)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_graphed_training_matches_eager(tiny_data):
    runs = []
    for graph in (False, True):
        model = fresh()
        cfg = TrainConfig(**{**CFG.__dict__, "cuda_graph": graph})
        train(model, tiny_data, cfg, device="cuda", progress=False)
        runs.append(model.state_dict())
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k].float(), runs[1][k].float(), rtol=1e-3, atol=1e-4)
