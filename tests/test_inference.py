"""fairseq_crild.data.inference: the one batching / logits loop the hub, crild-predict, the report,
the teacher-logit cache and the exports share."""

import pytest
import torch

from fairseq_crild.data.inference import batched, head_forward, predict_logits


class Rows:
    """A fairseq-style dataset of 1-d rows of different lengths (padded with 0)."""

    def __init__(self, n: int):
        self.rows = [torch.arange(1, 2 + i % 5, dtype=torch.long) * (i + 1) for i in range(n)]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return {"id": i, "source": self.rows[i]}

    def collater(self, samples):
        width = max(len(s["source"]) for s in samples)
        src = torch.zeros(len(samples), width, dtype=torch.long)
        for k, s in enumerate(samples):
            src[k, :len(s["source"])] = s["source"]
        return {"id": torch.tensor([s["id"] for s in samples]), "net_input": {"src_tokens": src}}


def _forward(net_input):
    src = net_input["src_tokens"].double()
    return torch.stack([src.sum(1), src.size(1) * torch.ones(len(src), dtype=src.dtype)], 1)


def test_batched_sizes_and_order():
    ds = Rows(10)
    assert [b["id"].tolist() for b in batched(ds, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [len(b["id"]) for b in batched(ds, (1, 7, 32))] == [1, 7, 2]
    assert [b["id"].tolist() for b in batched(ds, 2, [9, 3, 5])] == [[9, 3], [5]]
    assert list(batched(ds, 3, [])) == []
    with pytest.raises(ValueError, match="batch size 0"):
        list(batched(ds, 0))


def test_predict_logits_rows_follow_order_and_batches():
    ds = Rows(9)
    order = [8, 0, 4, 2, 6, 1, 3, 5, 7]
    out = predict_logits(_forward, ds, 4, order)
    assert out.dtype == torch.float32 and out.shape == (9, 2)
    # each row as its own batch would compute it: same sum, but the padded width of its batch
    for k, i in enumerate(order):
        assert out[k, 0] == float(ds.rows[i].sum())
        batch = order[k // 4 * 4:k // 4 * 4 + 4]
        assert out[k, 1] == max(len(ds.rows[j]) for j in batch)
    assert predict_logits(_forward, ds, 4, []).shape == (0, 0)


def test_head_forward_calls_the_named_head():
    calls = []

    def model(src_tokens, classification_head_name):
        calls.append(classification_head_name)
        return src_tokens.float(), {}

    out = head_forward(model, "glue")({"src_tokens": torch.ones(2, 3)})
    assert calls == ["glue"] and out.shape == (2, 3)
