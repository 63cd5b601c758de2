"""torch.compile in the sample jobs (sampling.compile): a cold compile takes about a minute on 2 cores, hence here
and not in the unit tier."""

import pytest
import torch

from advkd import teacher as T
from advkd.samplers import run_sampler, scheduler_spec


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return T.build_unet("digits8").eval(), T.build_scheduler().config


def test_compiled_sampling_matches_eager(tiny):
    """sampling.compile: the same samples as eager up to float rounding (also for the shorter last batch, a
    shape of its own), and the stats say it was compiled."""
    unet, cfg = tiny
    ddim = scheduler_spec("ddim")
    eager = run_sampler(unet, ddim, 3, cfg, n=6, seed=1, batch_size=4, device="cpu", progress=False)
    comp = run_sampler(unet, ddim, 3, cfg, n=6, seed=1, batch_size=4, device="cpu", progress=False, compile=True)
    assert comp[3]["compiled"] and not eager[3]["compiled"]
    assert torch.allclose(eager[0], comp[0], atol=1e-4) and torch.equal(eager[1], comp[1])
