"""--dropout-impl hash: the C++ kernel's mask equals a plain-Python SplitMix64 reference, the
backward applies the forward's mask, the distribution is Bernoulli(1 - p) with 1 / (1 - p)
scaling, and the result does not depend on the thread count; models built with it draw
from torch's generator (so --seed fixes them) and differ from torch's dropout draw by draw."""

import numpy as np
import pytest
import torch

from fairseq_crild.models import hash_dropout as hd
from fairseq_crild.models.hash_dropout import HashDropout, hash_dropout
from tests.helpers_bert import toy_bert

M64 = (1 << 64) - 1


def reference_keep(n: int, p: float, seed: int) -> np.ndarray:
    """Element j's keep decision: half (j % 2) of SplitMix64's (j // 2)-th output >= p 2^32."""
    threshold = min(int(round(p * 2 ** 32)), 2 ** 32 - 1)
    keep = []
    for i in range((n + 1) // 2):
        z = (seed % (1 << 64) + (i + 1) * hd.GOLDEN_GAMMA) & M64
        z = ((z ^ (z >> 30)) * hd.MIX_1) & M64
        z = ((z ^ (z >> 27)) * hd.MIX_2) & M64
        z ^= z >> 31
        keep += [(z & 0xFFFFFFFF) >= threshold, (z >> 32) >= threshold]
    return np.array(keep[:n])


@pytest.mark.parametrize("seed", [12345, -7, 2 ** 62 + 3])
@pytest.mark.parametrize("p", [0.1, 0.3, 0.9])
def test_mask_matches_the_reference(seed, p):
    x = torch.ones(7, 5)  # an odd count: the last output's high half is unused
    out = hash_dropout(x, p, seed=seed)
    scale = torch.tensor(1.0 / (1.0 - p), dtype=torch.float32)
    keep = torch.from_numpy(reference_keep(x.numel(), p, seed)).view_as(x)
    assert torch.equal(out, torch.where(keep, scale, torch.zeros(())))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_backward_applies_the_forward_mask(dtype):
    torch.manual_seed(0)
    x = (torch.rand(4, 6, 9) + 0.5).to(dtype).requires_grad_()
    y = hash_dropout(x, 0.25, seed=99)
    g = torch.randn(4, 6, 9).to(dtype)
    y.backward(g)
    keep = y != 0
    sc = 1.0 / 0.75
    assert torch.equal(y, torch.where(keep, (x.detach().float() * sc).to(dtype), 0))
    assert torch.equal(x.grad, torch.where(keep, (g.float() * sc).to(dtype), 0))
    assert 0 < keep.sum() < keep.numel()


def test_distribution_and_independence():
    p, n = 0.1, 1 << 20
    keep = hash_dropout(torch.ones(n), p, seed=2024) != 0
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(keep.float().mean().item() - (1 - p)) < 5 * sigma
    both = (keep[0::2] & keep[1::2]).float().mean().item()  # the two halves of one output
    assert abs(both - (1 - p) ** 2) < 5 * (((1 - p) ** 2 * (1 - (1 - p) ** 2)) / (n // 2)) ** 0.5
    other = hash_dropout(torch.ones(n), p, seed=2025) != 0
    agree = (keep == other).float().mean().item()  # independent seeds: P(equal) = p^2 + q^2
    assert abs(agree - (p ** 2 + (1 - p) ** 2)) < 0.005


def test_same_mask_at_any_thread_count():
    x = torch.randn(64, 12, 33, 33)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = hash_dropout(x, 0.1, seed=5)
        torch.set_num_threads(2)
        two = hash_dropout(x, 0.1, seed=5)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_non_contiguous_input_masks_by_logical_index():
    x = torch.randn(6, 10)
    assert torch.equal(hash_dropout(x.t(), 0.5, seed=3), hash_dropout(x.t().contiguous(), 0.5,
                                                                         seed=3))


def test_seed_comes_from_torch_generator_one_draw():
    x = torch.randn(1000)
    torch.manual_seed(7)
    a, after_a = hash_dropout(x, 0.2), torch.randn(3)
    torch.manual_seed(7)
    b = hash_dropout(x, 0.2)
    assert torch.equal(a, b)
    torch.manual_seed(7)
    hd.draw_seed()
    assert torch.equal(torch.randn(3), after_a)  # one dropout consumes one seed draw
    assert not torch.equal(hash_dropout(x, 0.2), a)


def test_edge_cases_and_module():
    x = torch.randn(5, 3)
    assert hash_dropout(x, 0.0) is x
    assert hash_dropout(x, 0.5, training=False) is x
    assert torch.equal(hash_dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="p must be in"):
        hash_dropout(x, 1.5)
    module = HashDropout(0.3)
    assert module.eval()(x) is x and module.state_dict() == {} and "p=0.3" in repr(module)
    assert not torch.equal(module.train()(x), x)


def test_missing_compiler_names_the_option(monkeypatch):
    import torch.utils.cpp_extension as cpp

    def fail(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")

    hd._kernel.cache_clear()
    monkeypatch.setattr(cpp, "load_inline", fail)
    try:
        with pytest.raises(hd.HashDropoutUnavailable, match="--dropout-impl torch"):
            toy_bert(1, dropout=0.1, dropout_impl="hash")
    finally:
        hd._kernel.cache_clear()


def test_model_uses_it_everywhere_and_is_seeded():
    """Every dropout of the model (embeddings, attention, hidden, head) is the hash one: a
    training forward under one seed repeats exactly, and differs from torch's dropout."""
    from fairseq_crild.models.bert import make_dropout

    hashed = toy_bert(2, 16, 4, 0, dropout=0.1, dropout_impl="hash")
    plain = toy_bert(2, 16, 4, 0, dropout=0.1)
    assert all(type(m) is not torch.nn.Dropout for m in hashed.modules())
    tokens = torch.randint(4, 20, (3, 9))
    tokens[0, 6:] = 1  # padding: the attention takes the explicit path with a key mask

    def run(model):
        torch.manual_seed(11)
        return model.train()(tokens, classification_head_name="glue")[0]

    assert torch.equal(run(hashed), run(hashed))
    assert not torch.equal(run(hashed), run(plain))
    torch.manual_seed(0)
    assert torch.equal(hashed.eval()(tokens)[0], plain.eval()(tokens)[0])
    with pytest.raises(ValueError, match="--dropout-impl 'philox'"):
        make_dropout(0.1, "philox")


def test_fairseq_train_option():
    """``--dropout-impl`` is a model option of fairseq-train (default torch), and an older
    config without the field builds torch's dropout."""
    from omegaconf import OmegaConf

    from fairseq_crild.models.bert import BertModel, dropout_impl_of
    from tests.test_bert_adam import parse

    assert parse().model.dropout_impl == "torch"
    cfg = parse("--dropout-impl", "hash").model
    assert cfg.dropout_impl == "hash"
    model = BertModel(cfg, 40, 1)
    assert isinstance(model.layers[0].dropout, HashDropout)
    old = OmegaConf.create({k: v for k, v in OmegaConf.to_container(cfg).items()
                            if k != "dropout_impl"})
    assert dropout_impl_of(old) == "torch"
    assert type(BertModel(old, 40, 1).embeddings.dropout) is torch.nn.Dropout


def test_pipeline_offers_the_models_choices():
    """crild-pipeline keeps its own (torch-free) list of the model's --dropout-impl choices."""
    from fairseq_crild.models.bert import DROPOUT_IMPLS
    from fairseq_crild.pipeline import recipe

    assert recipe.DROPOUT_IMPLS == tuple(str(choice) for choice in DROPOUT_IMPLS)
