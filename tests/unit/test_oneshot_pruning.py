"""One-shot (Minitron-style) pruning: activation importance by hand, the pruned model against masking."""

import copy

import pytest
import torch

from distil.losses import next_token_labels, token_cross_entropy
from distil.models.students import student_from_layers
from distil.pruning.oneshot import importance, prune_once
from distil.pruning.units import prunable_units
from distil.types import Batch
from factories import tiny_model

IDS = torch.tensor([[2, 9, 17, 30, 44, 61, 70, 88, 97, 3], [2, 8, 25, 33, 41, 3, 0, 0, 0, 0]])
MASK = (IDS != 0).long()
BATCH = Batch(input_ids=IDS, attention_mask=MASK)


def _model(family: str = "llama"):
    return tiny_model(family, "lm").eval()


def test_channel_and_group_importance_are_the_mean_activations_over_real_tokens():
    model = _model()
    units = prunable_units(model)
    scores = importance(model, units, [BATCH], "cosine")
    seen = {}
    layer = model.model.layers[1]
    hooks = [
        layer.mlp.down_proj.register_forward_pre_hook(lambda _m, a: seen.__setitem__("ffn", a[0])),
        layer.self_attn.o_proj.register_forward_pre_hook(lambda _m, a: seen.__setitem__("heads", a[0])),
    ]
    with torch.no_grad():
        out = model(input_ids=IDS, attention_mask=MASK, output_hidden_states=True)
    for h in hooks:
        h.remove()
    real = MASK.bool()
    torch.testing.assert_close(scores.groups["l1_ffn"], seen["ffn"][real].abs().mean(0))
    per_head = seen["heads"][real].view(-1, 4, 8).norm(dim=-1)  # 4 query heads of 8, 2 per KV group
    torch.testing.assert_close(scores.groups["l1_kv"], per_head.view(-1, 2, 2).sum(-1).mean(0))
    # Layer 0's block importance: 1 - cos(its input, its output) (the last output is after the final norm).
    h = out.hidden_states
    cos = torch.nn.functional.cosine_similarity(h[0][real], h[1][real], dim=-1)
    assert scores.layers[0].item() == pytest.approx((1 - cos).mean().item(), rel=1e-5)
    assert scores.tokens == int(MASK.sum())


def test_perplexity_metric_is_the_loss_rise_without_the_layer():
    model = _model()
    scores = importance(model, prunable_units(model), [BATCH], "perplexity")

    def loss(m):
        with torch.no_grad():
            return token_cross_entropy(
                m(input_ids=IDS, attention_mask=MASK).logits, next_token_labels(IDS, MASK)
            )

    base = loss(model)
    for i, kept in enumerate(([2], [1])):
        assert scores.layers[i].item() == pytest.approx(
            (loss(student_from_layers(model, kept)) - base).item(), abs=1e-5
        )


def test_dropping_ffn_channels_equals_zeroing_them():
    model = _model()
    units = prunable_units(model)
    scores = importance(model, units, [BATCH], "cosine")
    reference = copy.deepcopy(model)
    pruned, layers = prune_once(model, units, scores, {"kv_heads": 2, "hidden": 32, "ffn": 40}, None)
    assert layers == [1, 2] and pruned.config.intermediate_size == 40
    for i, layer in enumerate(reference.model.layers):
        dropped = scores.groups[f"l{i}_ffn"].argsort()[:24]  # the 24 least important channels
        with torch.no_grad():
            layer.mlp.down_proj.weight[:, dropped] = 0
    with torch.no_grad():
        a = pruned(input_ids=IDS, attention_mask=MASK).logits
        b = reference(input_ids=IDS, attention_mask=MASK).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3_text", "olmo2"])
def test_pruned_width_and_depth_reload_as_a_standard_checkpoint(tmp_path, family):
    from transformers import AutoModelForCausalLM

    model = _model(family)
    units = prunable_units(model)
    scores = importance(model, units, [BATCH], "cosine")
    pruned, layers = prune_once(model, units, scores, {"kv_heads": 1, "hidden": 24, "ffn": 40}, 1)
    assert layers == [int(scores.layers.argmax()) + 1]
    pruned.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    c = loaded.config
    assert (c.num_hidden_layers, c.num_key_value_heads, c.num_attention_heads, c.hidden_size) == (1, 1, 2, 24)
    with torch.no_grad():
        a = pruned(input_ids=IDS, attention_mask=MASK).logits
        b = loaded(input_ids=IDS, attention_mask=MASK).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
