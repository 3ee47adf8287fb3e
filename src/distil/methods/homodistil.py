"""HomoDistil: homotopic task-agnostic distillation (Liang et al., ICLR 2023, arXiv:2302.09632).

The student starts as an exact copy of the teacher (``models.student.init=copy``, prediction head
included) and is pruned while it is distilled, from full width to the target widths at step ``t_f``
along a cubic schedule, then trained on at the target widths; at each prune event it is narrowed in place
to the widths it keeps (``pruning=slicing``, the default), so a step costs what its current widths cost. Loss:
``alpha_mlm L_MLM + alpha_kl T^2 KL(p_t || p_s) + alpha_hidden sum_k MSE(H_s^k, H_t^k W_hid^k)
+ alpha_attn sum_k MSE(A_s^k, A_t^k) + alpha_emb MSE(E_s, E_t W_emb)``, with identity-initialised
projections on the teacher side (teacher width -> pruned student width), so every distillation term is 0
at step 0. Units are scored by PLATON and pruned coupled (`distil.pruning.units`,
`distil.pruning.platon`); the exported student is physically sliced into a standard checkpoint
(`distil.pruning.slicing`). No official code exists; every open choice is a config field
(`HomoDistilConfig`), explained in ``docs/methods/homodistil.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import ClassVar

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from distil.adapters.masking import head_rows, mask_batch
from distil.errors import ConfigError
from distil.losses import (
    attention_score_mse,
    attention_scores,
    kd_kl,
    logit_mse,
    next_token_labels,
    task_loss,
    token_cross_entropy,
)
from distil.methods._homodistil_config import HomoDistilConfig
from distil.methods.base import Method, MethodContext
from distil.models.families import family_of, get_layers, has_trained_lm_head, num_layers
from distil.models.layer_maps import resolve_layer_map
from distil.pruning.platon import Pruner
from distil.pruning.slicing import kept_widths, sliced_model
from distil.pruning.state import PruneState
from distil.pruning.units import PrunableUnits, prunable_units, resolve_targets
from distil.types import Batch, FeatureRequest, Features, LossOutput, Resize, Runtime

__all__ = ["HomoDistil", "HomoDistilConfig"]


def _check_lm_head(teacher: PreTrainedModel) -> None:
    if not has_trained_lm_head(teacher):
        architectures = list(getattr(teacher.config, "architectures", None) or [])
        raise ConfigError(
            f"method.alpha_kl > 0 on a corpus needs the teacher's trained MLM / LM head, but "
            f"{teacher.name_or_path!r} has none (architectures: {architectures}). Fit one first with the "
            "homodistil plan's head stage (plan.name=homodistil plan.head_steps=N), or set "
            "method.alpha_kl=0."
        )


def _identity(width: int, trainable: bool) -> nn.Linear:
    layer = nn.Linear(width, width, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(width))
    return layer.requires_grad_(trainable)


def _kept_mse(student: Tensor, target: Tensor, mask: Tensor, kept: int) -> Tensor:
    """Squared error per real token and kept dim (pruned dims are 0 on both sides)."""
    # A 0/1 weight, not boolean indexing: hidden states are finite at padding, and indexing's backward
    # (index_put into zeros) costs several times the error itself on the CPU.
    weight = mask.to(torch.float32).unsqueeze(-1)
    diff = (student.float() - target.float()) * weight
    return diff.pow(2).sum() / max(1, int(mask.sum()) * kept)


class HomoDistil(Method):
    """Distil a teacher into its own copy while pruning the copy's widths to the target."""

    name: ClassVar[str] = "homodistil"
    Config: ClassVar[type[HomoDistilConfig]] = HomoDistilConfig
    uses_teacher: ClassVar[bool] = True
    card: ClassVar[str] = "homodistil"

    def __init__(self, cfg: HomoDistilConfig, ctx: MethodContext) -> None:
        assert ctx.teacher is not None
        self.cfg, self.student, self.teacher = cfg, ctx.student, ctx.teacher
        self.token_level, self.is_regression = ctx.num_labels == 0, ctx.is_regression
        self.causal = family_of(ctx.student).causal
        self.tokenizer = ctx.tokenizer if self.token_level and not self.causal else None
        if self.token_level and not self.causal and ctx.tokenizer is None:
            raise ConfigError("HomoDistil's MLM masking needs the run's tokenizer in the method context.")
        self.modules = nn.ModuleDict()
        if self.token_level and cfg.alpha_kl > 0:
            _check_lm_head(ctx.teacher)
        d_s, d_t = (int(m.config.hidden_size) for m in (ctx.student, ctx.teacher))
        if d_s != d_t or ctx.student.config.num_attention_heads != ctx.teacher.config.num_attention_heads:
            raise ConfigError(
                "HomoDistil starts the student as a copy of the teacher (models.student.init=copy): their "
                f"widths and heads must be equal, got hidden {d_s} vs {d_t}."
            )
        self.layer_map = resolve_layer_map(
            cfg.layer_map, num_layers(ctx.teacher.config), num_layers(self.student.config)
        )
        units = prunable_units(ctx.student)
        self.target = resolve_targets(
            ctx.student, units, hidden=cfg.target_hidden_size, ffn=cfg.target_intermediate_size,
            ratio=cfg.target_width_ratio, params=cfg.target_params, kv_heads=cfg.target_num_key_value_heads,
        )  # fmt: skip
        if units.kv_groups and cfg.pruning == "masks":
            raise ConfigError(
                "method.pruning=masks is for encoders and GPT-2; decoders are pruned by slicing "
                "(method.pruning=slicing): their norms and grouped heads have no masked form here."
            )
        self.prune_state = PruneState(ctx.student, units)
        self.hidden_proj = nn.ModuleList(_identity(d_t, cfg.train_projections) for _ in self.layer_map)
        if cfg.alpha_hidden > 0:
            self.modules["hidden_proj"] = self.hidden_proj
        if cfg.alpha_emb > 0:
            self.modules["emb_proj"] = _identity(d_t, cfg.train_projections)
        self.pruner = Pruner(
            ctx.student, units, self.prune_state, self.target, t_i=cfg.t_i, t_f=cfg.t_f,
            delta_t=cfg.delta_t, beta1=cfg.beta1, beta2=cfg.beta2,
            scale_attention=cfg.attention_scaling == "pruned", slicing=cfg.pruning == "slicing",
        )  # fmt: skip

    @property
    def units(self) -> PrunableUnits:
        """The student's prunable units at its current widths."""
        return self.pruner.units

    @classmethod
    def model_head(cls, task_head: str) -> str:
        """``mlm`` (the family's language-model head) on a corpus, else the task's own head."""
        return "mlm" if task_head == "base" else task_head

    # --- features -----------------------------------------------------------------------------------

    def student_request(self) -> FeatureRequest:
        """Logits, hidden states, attention probabilities or every layer's Q/K, as the weights need."""
        c = self.cfg
        return FeatureRequest(
            logits=c.alpha_kl > 0 or c.alpha_task > 0 or (self.token_level and c.alpha_mlm > 0),
            hidden_states=c.alpha_hidden > 0 or c.alpha_emb > 0,
            attentions=c.alpha_attn > 0 and c.attention_target == "probs",
            qkv_layers=tuple(range(num_layers(self.student.config))) if self._scores() else (),
        )

    def teacher_request(self) -> FeatureRequest | None:
        """The teacher's side of every term with a non-zero weight."""
        c = self.cfg
        return FeatureRequest(
            logits=c.alpha_kl > 0,
            hidden_states=c.alpha_hidden > 0 or c.alpha_emb > 0,
            attentions=c.alpha_attn > 0 and c.attention_target == "probs",
            qkv_layers=tuple(g - 1 for g in self.layer_map) if self._scores() else (),
        )

    def _scores(self) -> bool:
        return self.cfg.alpha_attn > 0 and self.cfg.attention_target == "scores"

    def trainable_modules(self) -> nn.ModuleDict:
        """Projections W_hid^k / W_emb."""
        return self.modules

    # --- state and hooks -----------------------------------------------------------------------------

    @property
    def corrupts_inputs(self) -> bool:
        """Encoders on a corpus see masked inputs."""
        return self.tokenizer is not None

    def state_dict(self) -> dict[str, Tensor]:
        """The pruning masks and PLATON EMAs, keyed ``pruning.masks.<group>``, ``pruning.ipt.<param>``..."""
        return {f"pruning.{k}": v for k, v in self.prune_state.state_dict().items()}

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore the masks and EMAs; the masked forward picks them up before the next step."""
        self.prune_state.load_state_dict({k.removeprefix("pruning."): v for k, v in state.items()})

    def prepare_batch(self, batch: Batch) -> Batch:
        """Mask encoder inputs on a corpus (80/10/10, global RNG); other batches pass unchanged.

        The MLM heads of both models score only the positions a term reads: the masked ones, or every real
        token when the KL covers them (``kl_positions=all``).
        """
        if self.tokenizer is None:
            return batch
        c = self.cfg
        kl_everywhere = c.alpha_kl > 0 and c.kl_positions == "all"
        return mask_batch(
            batch, self.tokenizer, mlm_probability=c.mlm_probability, kl_everywhere=kl_everywhere
        )

    def attach(self, runtime: Runtime) -> None:
        """Narrow parameters as the engine cuts them (under FSDP: gathered, cut and sharded again)."""
        if runtime.cut_parameter is not None:
            self.pruner.cut = runtime.cut_parameter

    def on_gradients(self, scale: float) -> None:
        """PLATON's sensitivities ``|theta * grad|`` from the step's final, synchronised gradients."""
        self.pruner.record_gradients(scale)

    def on_step_end(self, step: int) -> Resize | None:
        """PLATON update and pruning on schedule; the student and the projections narrowed or masked alike."""
        cuts = self.pruner.on_step_end(step)
        if cuts is not None:
            return self._resized(cuts)
        if self.cfg.pruning == "masks":
            mask = self.prune_state.masks["hidden"]
            with torch.no_grad():
                for layer in self._projections():
                    layer.weight.mul_(mask[:, None])  # their output dims are the student's hidden dims
        return None

    def restore_shapes(self, state: Mapping[str, Tensor]) -> Resize | None:
        """Narrow the fresh full-width copy to the widths the checkpoint's masks were saved at."""
        prefix = "pruning.masks."
        sizes = {k.removeprefix(prefix): int(v.numel()) for k, v in state.items() if k.startswith(prefix)}
        cuts = self.pruner.restore(sizes) if sizes else None
        return None if cuts is None else self._resized(cuts)

    def _projections(self) -> list[nn.Linear]:
        return [m for m in self.modules.modules() if isinstance(m, nn.Linear)]

    @torch.no_grad()
    def _resized(self, cuts: list[tuple[str, int, Tensor]]) -> Resize:
        """The student's cuts, plus the projections' output rows cut like the student's hidden dims."""
        params = dict(self.student.named_parameters())
        kept = [(params[name], axis, index) for name, axis, index in cuts]
        hidden = next(index for name, axis, index in cuts if self._is_hidden(name, axis))
        for layer in self._projections():
            weight = layer.weight
            assert isinstance(weight, nn.Parameter)
            self.pruner.cut(weight, 0, hidden)
            layer.out_features = weight.shape[0]
            kept.append((weight, 0, hidden))
        return Resize(tuple(kept))

    def _is_hidden(self, name: str, axis: int) -> bool:
        return any(s.param == name and s.axis == axis for s in self.units.groups["hidden"].slots)

    def export_model(self, student: PreTrainedModel) -> PreTrainedModel:
        """Loop hook: what ``best/`` and ``student/`` hold (the student sliced to its kept widths).

        ``student`` is the live student, or under FSDP its gathered copy, built from the (narrowed) config
        with its modules' default attention scale: the live scale is set on it first, to be folded in.
        """
        return self.export(student)

    def export(self, student: PreTrainedModel | None = None) -> PreTrainedModel:
        """The student (or its gathered copy) sliced to its kept widths (what ``student/`` holds)."""
        self.pruner.sync()  # the live attention scale, if masks changed since the last forward
        model = self.student if student is None else student
        if model is not self.student:
            live, copy_modules = dict(self.student.named_modules()), dict(model.named_modules())
            for name in self.units.attention:
                copy_modules[name].scaling = live[name].scaling
        masks = dict(self.prune_state.masks)
        widths = kept_widths(self.units, masks)
        if widths != self.target:
            warnings.warn(
                f"HomoDistil export at widths {widths}, not the target {self.target}: the run ended before "
                f"method.t_f={self.cfg.t_f}.",
                stacklevel=2,
            )
        return sliced_model(model, self.units, masks)

    # --- loss ----------------------------------------------------------------------------------------

    def _prediction_terms(self, batch: Batch, s: Features, t: Features | None) -> dict[str, Tensor]:
        c, parts = self.cfg, {}
        labels, where = None, s.attention_mask.bool()
        if self.token_level and self.causal:
            labels = next_token_labels(batch.input_ids, s.attention_mask)
        elif self.token_level:
            if batch.mlm_labels is None:
                raise ConfigError("HomoDistil on a corpus needs masked inputs: call prepare_batch first.")
            if c.kl_positions == "masked":
                where = batch.mlm_labels != -100
            labels, where = head_rows(batch, batch.mlm_labels, where)
        if labels is not None and c.alpha_mlm > 0:
            assert s.logits is not None
            parts["next_token" if self.causal else "mlm"] = token_cross_entropy(s.logits, labels)
        if c.alpha_kl > 0:
            assert t is not None and t.logits is not None and s.logits is not None
            if self.is_regression:
                parts["kl"] = logit_mse(s.logits, t.logits)
            else:
                parts["kl"] = kd_kl(
                    s.logits, t.logits, c.temperature, mask=where if self.token_level else None
                )
        if c.alpha_task > 0 and not self.token_level:
            assert s.logits is not None and batch.labels is not None
            parts["task"] = task_loss(s.logits, batch.labels, self.is_regression)
        return parts

    def _layer_terms(self, s: Features, t: Features) -> dict[str, Tensor]:
        c, parts, mask = self.cfg, {}, s.attention_mask
        kept = self.pruner.kept.get("hidden", self.units.groups["hidden"].size)
        pairs = list(enumerate(self.layer_map, 1))  # (student layer k, teacher layer M(k)), 1-indexed
        if c.alpha_hidden > 0:
            assert s.hidden_states is not None and t.hidden_states is not None
            proj = self.hidden_proj
            terms = [
                _kept_mse(s.hidden_states[k], proj[k - 1](t.hidden_states[g]), mask, kept) for k, g in pairs
            ]
            parts["hidden"] = torch.stack(terms).sum()
        if c.alpha_emb > 0:
            assert s.hidden_states is not None and t.hidden_states is not None
            target = self.modules["emb_proj"](t.hidden_states[0])
            parts["emb"] = _kept_mse(s.hidden_states[0], target, mask, kept)
        if c.alpha_attn > 0:
            terms = [
                attention_score_mse(
                    self._attention(s, k - 1, self.student),
                    self._teacher_heads(self._attention(t, g - 1, self.teacher), k - 1),
                    mask,
                    causal=self.causal,
                )
                for k, g in pairs
            ]
            parts["attn"] = torch.stack(terms).sum()
        return parts

    def _teacher_heads(self, attention: Tensor, layer: int) -> Tensor:
        """The teacher's heads that student layer ``layer``'s remaining heads started as (decoders)."""
        origin = self.prune_state.origins.get(f"l{layer}_kv")
        if origin is None or origin.numel() * self.units.queries_per_kv == attention.shape[1]:
            return attention
        n_rep = self.units.queries_per_kv
        heads = origin.to(attention.device)[:, None] * n_rep + torch.arange(n_rep, device=attention.device)
        return attention.index_select(1, heads.flatten())

    def _attention(self, f: Features, layer: int, model: PreTrainedModel) -> Tensor:
        """Attention probabilities, or pre-softmax scores at the scale the model itself applies."""
        if self.cfg.attention_target == "probs":
            assert f.attentions is not None
            return f.attentions[layer]
        qkv = f.qkv[layer]
        module = get_layers(model)[layer].get_submodule(self.units.attention_path)
        # attention_scores divides by sqrt(full head dim); rescale to the module's own (live) scale.
        scaling = module.scaling
        assert isinstance(scaling, float)
        factor = scaling * qkv.head_dim**0.5
        return attention_scores(qkv.query, qkv.key, qkv.num_heads, qkv.num_kv_heads) * factor

    def loss(self, batch: Batch, student: Features, teacher: Features | None) -> LossOutput:
        """Weighted sum of the terms with a non-zero weight; each is logged unweighted."""
        c = self.cfg
        assert teacher is not None
        parts = self._prediction_terms(batch, student, teacher) | self._layer_terms(student, teacher)
        weight = {"mlm": c.alpha_mlm, "next_token": c.alpha_mlm, "kl": c.alpha_kl, "task": c.alpha_task}
        weight |= {"hidden": c.alpha_hidden, "emb": c.alpha_emb, "attn": c.alpha_attn}
        total = sum(weight[name] * value for name, value in parts.items())
        return LossOutput(total=total, parts=parts)  # type: ignore[arg-type]
