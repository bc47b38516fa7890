"""benchmark_gemm.EncoderGemms: the encoder's matmuls alone, counted from their own shapes."""

import pytest
import torch

from fairseq_crild.cli.benchmark_flops import EncoderShape, forward_flops
from fairseq_crild.cli.benchmark_gemm import EncoderGemms, gemm_pass


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_encoder_gemms_compute_the_executed_forward_count(dtype):
    """The products it runs are those benchmark_flops counts for a padded forward: every
    example ``width`` tokens attending to ``width`` keys, through every layer."""
    shape = EncoderShape(layers=2, hidden=24, ffn=40)
    gemms = EncoderGemms(shape, heads=4, dtype=dtype, device=torch.device("cpu"))
    gemms(3, 7)
    assert gemms.flops == forward_flops(shape, [1, 5, 7], width=7)
    gemms(2, 5)  # a second shape gets its own activations; counts add up
    assert gemms.flops == (forward_flops(shape, [7] * 3, width=7)
                           + forward_flops(shape, [5] * 2, width=5))
    assert set(gemms._acts) == {(3, 7), (2, 5)}
    assert all(t.dtype == dtype for t in gemms._acts[(3, 7)].values())


def test_encoder_gemms_reject_a_width_heads_cannot_split():
    with pytest.raises(ValueError, match="not a multiple of 5 attention heads"):
        EncoderGemms(EncoderShape(1, 24, 40), heads=5, dtype=torch.float32,
                     device=torch.device("cpu"))


def test_gemm_pass_counts_its_products():
    run, flops = gemm_pass(torch.bfloat16, 8, 3, torch.device("cpu"))
    run()
    assert flops == 3 * 2 * 8 ** 3
