"""Hand-written floors for `benchmarks/floor.py`: each method's work in plain PyTorch.

A floor is what a careful engineer would write for one method's training step on these BERT models,
without distil: the teacher's forward under ``no_grad`` (with the outputs the loss needs), the student's
forward, the method's loss written out with ``torch.nn.functional``, backward, clipping and AdamW. Queries,
keys and values come from plain forward hooks on the attention's linear maps. The loss weights,
temperatures and layer maps are the method's defaults (the same as in the benchmark's distil runs).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["FLOORS", "PEERS", "floor_step"]

Loss = Callable[[dict[str, Any]], Tensor]


def _attention(model: nn.Module, layer: int) -> nn.Module:
    return model.base_model.encoder.layer[layer].attention.self  # type: ignore[union-attr,index]


class _QKV:
    """Plain forward hooks on the Q, K and V maps of some layers; cleared by the step."""

    def __init__(self, model: nn.Module, layers: list[int]) -> None:
        self.out: dict[tuple[int, str], Tensor] = {}
        for layer in layers:
            attention = _attention(model, layer)
            for name in ("query", "key", "value"):
                getattr(attention, name).register_forward_hook(self._hook(layer, name))
        self.heads = int(model.config.num_attention_heads)  # type: ignore[union-attr]

    def _hook(self, layer: int, name: str) -> Callable[..., None]:
        def keep(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            self.out[(layer, name)] = output

        return keep


def _kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """T^2 KL(softmax(t/T) || softmax(s/T)) averaged over rows."""
    s = F.log_softmax(student.float() / temperature, dim=-1)
    t = F.softmax(teacher.float() / temperature, dim=-1)
    return F.kl_div(s, t, reduction="batchmean") * temperature**2


def _scores(qkv: _QKV, layer: int) -> Tensor:
    q, k = qkv.out[(layer, "query")], qkv.out[(layer, "key")]
    b, s, w = q.shape
    d = w // qkv.heads
    q = q.view(b, s, qkv.heads, d).transpose(1, 2)
    k = k.view(b, s, qkv.heads, d).transpose(1, 2)
    return q @ k.transpose(-1, -2) / math.sqrt(d)


def _relation(x: Tensor, heads: int) -> Tensor:
    b, s, w = x.shape
    d = w // heads
    x = x.float().view(b, s, heads, d).transpose(1, 2)
    return x @ x.transpose(-1, -2) / math.sqrt(d)


def _relation_kl(student: Tensor, teacher: Tensor) -> Tensor:
    """KL(teacher rows || student rows) of relation logits, averaged over every row."""
    s = F.log_softmax(student, dim=-1)
    t = F.softmax(teacher, dim=-1)
    return (t * (t.clamp_min(1e-30).log() - s)).sum(-1).mean()


def _mask_tokens(ids: Tensor, mask_id: int, vocab: int, probability: float = 0.15) -> tuple[Tensor, Tensor]:
    """BERT masking (80 % [MASK], 10 % random, 10 % kept), never the first and last token."""
    chosen = torch.rand(ids.shape) < probability
    chosen[:, 0] = chosen[:, -1] = False
    labels = torch.where(chosen, ids, -100)
    roll = torch.rand(ids.shape)
    out = ids.clone()
    out[chosen & (roll < 0.8)] = mask_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    out[swap] = torch.randint(vocab, ids.shape)[swap]
    return out, labels


def floor_step(
    student: nn.Module,
    teacher: nn.Module | None,
    extras: nn.Module,
    inputs: dict[str, Tensor],
    loss: Callable[[dict[str, Any]], Tensor],
    *,
    teacher_outputs: dict[str, bool],
    student_outputs: dict[str, bool],
    frozen_student: bool = False,
    mask_id: int | None = None,
    bodies: tuple[nn.Module | None, nn.Module | None] | None = None,
) -> Callable[[], None]:
    """One plain training step: teacher forward (no grad), student forward, ``loss``, backward, AdamW.

    ``bodies`` (the student's and the teacher's base models) are run instead of the whole models when the
    loss applies the heads itself, to the rows it needs.
    """
    run_student, run_teacher = (student, teacher) if bodies is None else bodies
    student.train()  # dropout on, as in any training step (the copies were made in eval mode)
    params = [p for p in [*student.parameters(), *extras.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    vocab = int(student.config.vocab_size)  # type: ignore[union-attr]

    def step() -> None:
        feed = dict(inputs)
        labels = None
        if mask_id is not None:
            feed["input_ids"], labels = _mask_tokens(inputs["input_ids"], mask_id, vocab)
        with torch.no_grad():
            t = run_teacher(**feed, **teacher_outputs) if run_teacher is not None else None
        if frozen_student:
            with torch.no_grad():
                s = run_student(**feed, **student_outputs)
        else:
            s = run_student(**feed, **student_outputs)
        value = loss({"s": s, "t": t, "labels": inputs.get("labels"), "mlm_labels": labels, "mask": feed})
        value.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _on_logits(
    parts: Any, feed: dict[str, Tensor], loss: Callable[[dict[str, Any]], Tensor]
) -> Callable[[], None]:
    """The floor of a loss on the two models' logits alone (KD, TinyBERT's prediction layer)."""
    return floor_step(
        copy.deepcopy(parts.student),
        parts.teacher,
        nn.ModuleList(),
        feed,
        loss,
        teacher_outputs={},
        student_outputs={},
    )


def _finetune(parts: Any, inputs: dict[str, Tensor]) -> Callable[[], None]:
    student = copy.deepcopy(parts.student)
    labels = inputs.pop("labels")
    step = floor_step(
        student,
        None,
        nn.ModuleList(),
        inputs,
        lambda o: F.cross_entropy(o["s"].logits, labels),
        teacher_outputs={},
        student_outputs={},
    )
    inputs["labels"] = labels
    return step


def _task_inputs(inputs: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
    feed = {k: v for k, v in inputs.items() if k != "labels"}
    return feed, inputs["labels"]


def _kd(parts: Any, inputs: dict[str, Tensor]) -> Callable[[], None]:
    feed, labels = _task_inputs(inputs)

    def loss(o: dict[str, Any]) -> Tensor:
        return 0.5 * _kl(o["s"].logits, o["t"].logits, 2.0) + 0.5 * F.cross_entropy(o["s"].logits, labels)

    return _on_logits(parts, feed, loss)


def _layerwise(parts: Any, inputs: dict[str, Tensor], key: str) -> Callable[[], None]:
    """LWD (student projections) and TED Stage II (student and frozen teacher filters)."""
    feed, labels = _task_inputs(inputs)
    method = parts.method
    mapped = list(method.map) if key == "lwd" else list(method.filters.layers)
    trained = copy.deepcopy(method.projections if key == "lwd" else method.filters)
    frozen = copy.deepcopy(method.teacher_filters) if key == "ted" else None
    teacher_layers = [method.map[i] for i in range(len(mapped))] if key == "lwd" else list(frozen.layers)

    def loss(o: dict[str, Any]) -> Tensor:
        s, t = o["s"], o["t"]
        outputs = trained(s.hidden_states)
        if frozen is None:
            targets = [t.hidden_states[g] for g in teacher_layers]
        else:
            with torch.no_grad():
                targets = frozen(t.hidden_states)
        mse = torch.stack(
            [F.mse_loss(a.float(), b.float()) for a, b in zip(outputs, targets, strict=True)]
        ).mean()
        return F.cross_entropy(s.logits, labels) + 20 * _kl(s.logits, t.logits, 2.0) + 20 * mse

    hidden = {"output_hidden_states": True}
    return floor_step(
        copy.deepcopy(parts.student),
        parts.teacher,
        trained,
        feed,
        loss,
        teacher_outputs=hidden,
        student_outputs=hidden,
    )


def _ted_filters(parts: Any, inputs: dict[str, Tensor]) -> Callable[[], None]:
    feed, labels = _task_inputs(inputs)
    method = parts.method
    filters, heads = copy.deepcopy(method.filters), copy.deepcopy(method.heads)
    extras = nn.ModuleList([filters, heads])

    def loss(o: dict[str, Any]) -> Tensor:
        states = o["s"].hidden_states
        mask = o["mask"]["attention_mask"]
        terms = [
            F.cross_entropy(heads[f"layer_{n}"](out, mask, False), labels)
            for n, out in zip(filters.layers, filters(states), strict=True)
        ]
        return torch.stack(terms).mean()

    return floor_step(
        copy.deepcopy(parts.student),
        None,
        extras,
        feed,
        loss,
        teacher_outputs={},
        student_outputs={"output_hidden_states": True},
        frozen_student=True,
    )


def _tinybert(parts: Any, inputs: dict[str, Tensor]) -> Callable[[], None]:
    feed = {k: v for k, v in inputs.items() if k != "labels"}
    method = parts.method
    student = copy.deepcopy(parts.student)
    projection = copy.deepcopy(method.modules["projection"])
    layer_map = list(method.layer_map)
    s_qkv = _QKV(student, list(range(len(layer_map))))
    t_qkv = _QKV(parts.teacher, [g - 1 for g in layer_map])

    def loss(o: dict[str, Any]) -> Tensor:
        s, t = o["s"], o["t"]
        attention = sum(
            F.mse_loss(_scores(s_qkv, m - 1), _scores(t_qkv, g - 1)) for m, g in enumerate(layer_map, 1)
        )
        hidden = sum(
            F.mse_loss(projection[0](s.hidden_states[m]), t.hidden_states[g])
            for m, g in enumerate(layer_map, 1)
        )
        embedding = F.mse_loss(projection[0](s.hidden_states[0]), t.hidden_states[0])
        return attention + hidden + embedding  # type: ignore[return-value]

    hidden = {"output_hidden_states": True}
    return floor_step(
        student, parts.teacher, projection, feed, loss, teacher_outputs=hidden, student_outputs=hidden
    )


def _tinybert_textbrewer(parts: Any, inputs: dict[str, Tensor]) -> Callable[[], None]:
    """TextBrewer's way to TinyBERT's layer stage: the MSE of the attention *probabilities* the models
    return (eager attention, ``output_attentions``), beside the same hidden and embedding MSEs. A different,
    cheaper loss than the paper's pre-softmax scores: no product to rebuild, but the probabilities of
    every layer are materialised and returned."""
    feed = {k: v for k, v in inputs.items() if k != "labels"}
    method = parts.method
    student, teacher = copy.deepcopy(parts.student), copy.deepcopy(parts.teacher)
    for model in (student, teacher):
        model.set_attn_implementation("eager")  # the only implementation that returns probabilities
    projection = copy.deepcopy(method.modules["projection"])
    layer_map = list(method.layer_map)

    def loss(o: dict[str, Any]) -> Tensor:
        s, t = o["s"], o["t"]
        attention = sum(
            F.mse_loss(s.attentions[m - 1], t.attentions[g - 1]) for m, g in enumerate(layer_map, 1)
        )
        hidden = sum(
            F.mse_loss(projection[0](s.hidden_states[m]), t.hidden_states[g])
            for m, g in enumerate(layer_map, 1)
        )
        embedding = F.mse_loss(projection[0](s.hidden_states[0]), t.hidden_states[0])
        return attention + hidden + embedding  # type: ignore[return-value]

    outputs = {"output_hidden_states": True, "output_attentions": True}
    return floor_step(
        student, teacher, projection, feed, loss, teacher_outputs=outputs, student_outputs=outputs
    )


def _tinybert_prediction(parts: Any, inputs: dict[str, Tensor]) -> Callable[[], None]:
    feed, _ = _task_inputs(inputs)

    def loss(o: dict[str, Any]) -> Tensor:
        t = F.softmax(o["t"].logits.float(), dim=-1)
        return -(t * F.log_softmax(o["s"].logits.float(), dim=-1)).sum(-1).mean()

    return _on_logits(parts, feed, loss)


def _minilm(parts: Any, inputs: dict[str, Tensor], version: int) -> Callable[[], None]:
    feed = {k: v for k, v in inputs.items() if k != "labels"}
    student = copy.deepcopy(parts.student)
    s_last = int(student.config.num_hidden_layers) - 1
    t_layer = parts.method.teacher_layer if version == 2 else int(parts.teacher.config.num_hidden_layers) - 1
    s_qkv, t_qkv = _QKV(student, [s_last]), _QKV(parts.teacher, [t_layer])
    heads = parts.method.cfg.relation_heads if version == 2 else None

    def loss(o: dict[str, Any]) -> Tensor:
        def part(side: _QKV, layer: int, name: str) -> Tensor:
            return side.out[(layer, name)]

        if version == 2:
            total = torch.zeros(())
            for name in ("query", "key", "value"):
                s_rel = _relation(part(s_qkv, s_last, name), heads)
                t_rel = _relation(part(t_qkv, t_layer, name), heads)
                total = total + _relation_kl(s_rel, t_rel)
            return total
        attention = _relation_kl(_scores(s_qkv, s_last), _scores(t_qkv, t_layer).detach())
        values = _relation_kl(
            _relation(part(s_qkv, s_last, "value"), s_qkv.heads),
            _relation(part(t_qkv, t_layer, "value"), t_qkv.heads),
        )
        return attention + values

    return floor_step(
        student, parts.teacher, nn.ModuleList(), feed, loss, teacher_outputs={}, student_outputs={}
    )


def _distilbert(parts: Any, inputs: dict[str, Tensor]) -> Callable[[], None]:
    feed = {k: v for k, v in inputs.items() if k != "labels"}
    student = copy.deepcopy(parts.student)
    projection = copy.deepcopy(parts.method.modules)
    mask_id = int(parts.tokenizer.mask_token_id)

    def loss(o: dict[str, Any]) -> Tensor:
        s, t, labels = o["s"], o["t"], o["mlm_labels"]
        real = o["mask"]["attention_mask"].bool()
        ce = _kl(s.logits[real], t.logits[real], 2.0)
        mlm = F.cross_entropy(s.logits[labels != -100].float(), labels[labels != -100])
        s_last = s.hidden_states[-1][real]
        if "cos_projection" in projection:
            s_last = projection["cos_projection"](s_last)
        t_last = t.hidden_states[-1][real]
        cos = (1 - F.cosine_similarity(s_last.float(), t_last.float(), dim=-1)).mean()
        return 5.0 * ce + 2.0 * mlm + cos

    hidden = {"output_hidden_states": True}
    return floor_step(
        student,
        parts.teacher,
        projection,
        feed,
        loss,
        teacher_outputs=hidden,
        student_outputs=hidden,
        mask_id=mask_id,
    )


def _masked_logits(model: nn.Module, out: Any, rows: Tensor) -> Tensor:
    """The MLM head on the selected rows only (a careful floor scores just the masked positions)."""
    return model.cls(out.hidden_states[-1][rows])  # type: ignore[operator,union-attr]


def _homodistil(parts: Any, inputs: dict[str, Tensor]) -> Callable[[], None]:
    """Its losses at full width, without the pruning (PLATON scores, masks) that HomoDistil adds."""
    feed = {k: v for k, v in inputs.items() if k != "labels"}
    method = parts.method
    student = copy.deepcopy(parts.student)
    projections = copy.deepcopy(method.trainable_modules())
    pairs = list(enumerate(method.layer_map, 1))
    mask_id = int(parts.tokenizer.mask_token_id)
    for model in (student, parts.teacher):
        model.set_attn_implementation("eager")  # attention probabilities are outputs of eager attention
    s_body, t_body = student.base_model, parts.teacher.base_model

    def loss(o: dict[str, Any]) -> Tensor:
        s, t, labels = o["s"], o["t"], o["mlm_labels"]
        masked = labels != -100
        s_logits = _masked_logits(student, s, masked)
        with torch.no_grad():
            t_logits = _masked_logits(parts.teacher, t, masked)
        mlm = F.cross_entropy(s_logits.float(), labels[masked])
        kl = _kl(s_logits, t_logits, 1.0)
        hidden = sum(
            F.mse_loss(s.hidden_states[k], projections["hidden_proj"][k - 1](t.hidden_states[g]))
            for k, g in pairs
        )
        emb = F.mse_loss(s.hidden_states[0], projections["emb_proj"](t.hidden_states[0]))
        attn = sum(F.mse_loss(s.attentions[k - 1], t.attentions[g - 1]) for k, g in pairs)
        return mlm + kl + hidden + emb + attn  # type: ignore[return-value]

    outputs = {"output_hidden_states": True, "output_attentions": True}
    return floor_step(
        student,
        parts.teacher,
        projections,
        feed,
        loss,
        teacher_outputs=outputs,
        student_outputs=outputs,
        mask_id=mask_id,
        bodies=(s_body, t_body),
    )


def _homodistil_head(parts: Any, inputs: dict[str, Tensor]) -> Callable[[], None]:
    feed = {k: v for k, v in inputs.items() if k != "labels"}
    student = copy.deepcopy(parts.student)

    def loss(o: dict[str, Any]) -> Tensor:
        labels = o["mlm_labels"]
        masked = labels != -100
        return F.cross_entropy(_masked_logits(student, o["s"], masked).float(), labels[masked])

    return floor_step(
        student,
        None,
        nn.ModuleList(),
        feed,
        loss,
        teacher_outputs={},
        student_outputs={"output_hidden_states": True},
        frozen_student=True,  # only the head outside the base model trains (as the method does)
        mask_id=int(parts.tokenizer.mask_token_id),
        bodies=(student.base_model, None),
    )


FLOORS: dict[str, Callable[[Any, dict[str, Tensor]], Callable[[], None]]] = {
    "finetune": _finetune,
    "kd": _kd,
    "lwd": lambda parts, inputs: _layerwise(parts, inputs, "lwd"),
    "ted": lambda parts, inputs: _layerwise(parts, inputs, "ted"),
    "ted_filters": _ted_filters,
    "tinybert": _tinybert,
    "tinybert_prediction": _tinybert_prediction,
    "minilm": lambda parts, inputs: _minilm(parts, inputs, 1),
    "minilmv2": lambda parts, inputs: _minilm(parts, inputs, 2),
    "distilbert": _distilbert,
    "homodistil": _homodistil,
    "homodistil_head": _homodistil_head,
}

# Peers: how another toolkit does a method's work, timed beside distil and the floor (issue 27).
PEERS: dict[str, tuple[str, Callable[[Any, dict[str, Tensor]], Callable[[], None]]]] = {
    "tinybert": ("textbrewer-style (attention-probability MSE)", _tinybert_textbrewer),
}
