"""HomoDistil's settings.

Every value the paper leaves open is a field here with a documented default; the reasons are in
``docs/methods/homodistil.md``. Fitting a missing MLM head first is a plan setting
(`distil.plans.homodistil`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from distil.errors import ConfigError
from distil.types import RunView

__all__ = ["HomoDistilConfig"]


@dataclass
class HomoDistilConfig:
    """HomoDistil settings (Liang et al., ICLR 2023; docs/methods/homodistil.md).

    Target widths: give widths, a ratio or a budget (none: ``target_width_ratio=0.5``). Encoders and GPT-2
    keep every head and prune its dims; decoders (Llama-style) keep each head whole and prune whole KV
    groups, with the hidden width pruned on its own.

    Attributes:
        target_hidden_size: Hidden width at ``t_f``. Encoders and GPT-2: a multiple of the heads (a standard
            checkpoint's heads are uniform and span the hidden width), so the per-head width is this /
            heads; decoders: any width.
        target_intermediate_size: FFN width at ``t_f`` (default: scaled like the hidden width).
        target_num_key_value_heads: Decoders: KV groups kept per layer, each with its query heads
            (default: all).
        target_width_ratio: Keep this share of every width instead (per-head width, or KV groups, rounded).
        target_params: Or a parameter budget: the widest model with every width scaled alike that fits.
        t_i: Steps at full width before pruning starts (PLATON's initial warm-up).
        t_f: Step at which the target widths are reached; training continues at them afterwards.
        delta_t: Steps between mask updates in ``(t_i, t_f]`` (PLATON: 10).
        beta1: EMA constant of the sensitivity ``|theta * grad|`` (PLATON's BERT-base value 0.85).
        beta2: EMA constant of its uncertainty (PLATON 0.95); 1 scores by the smoothed sensitivity alone.
        alpha_mlm: Weight of the student's MLM loss (next-token loss for decoders); corpus only.
        alpha_kl: alpha1, weight of ``T^2 KL(teacher || student)`` on the prediction head.
        alpha_hidden: alpha2, weight of ``sum_k MSE(H_s^k, H_t^M(k) W_hid^k)`` over the student layers.
        alpha_attn: alpha3, weight of ``sum_k MSE(A_s^k, A_t^M(k))``.
        alpha_emb: alpha4, weight of ``MSE(E_s, E_t W_emb)``.
        alpha_task: Weight of the task loss on labelled tasks (not in the paper; 0 keeps it off).
        temperature: KL temperature T.
        kl_positions: Encoders on a corpus: KL at the ``masked`` positions or at ``all`` real tokens.
            Decoders always use every real token.
        attention_target: ``probs``: attention probabilities (the model's ``output_attentions``);
            ``scores``: pre-softmax scores recomputed from Q/K with each model's own scale.
        attention_scaling: ``teacher``: keep the teacher's ``1/sqrt(full head dim)`` as heads shrink
            (scores change smoothly; folded into W_q at export); ``pruned``: ``1/sqrt(kept head dim)``.
        mlm_probability: Share of real, non-special tokens masked (80/10/10) for encoders on a corpus.
        train_projections: Train W_hid^k and W_emb (identity-initialised, teacher side) or keep them fixed.
        layer_map: Teacher layer of each student layer: ``uniform`` (the identity for a copy of the
            teacher, the paper's setting) or a 1-indexed list, for students with fewer layers.
        pruning: ``slicing``: narrow the student (its weights, AdamW moments and PLATON scores) to the
            kept widths at every prune event, so a step costs what the current widths cost; ``masks``:
            keep the full shapes and zero what is pruned (the same run up to float rounding, at the full
            width's cost every step; kept as the reference the slicing is tested against; encoders and
            GPT-2 only).
    """

    target_hidden_size: int | None = None
    target_intermediate_size: int | None = None
    target_num_key_value_heads: int | None = None
    target_width_ratio: float | None = None
    target_params: int | None = None
    t_i: int = 0
    t_f: int = 1000
    delta_t: int = 10
    beta1: float = 0.85
    beta2: float = 0.95
    alpha_mlm: float = 1.0
    alpha_kl: float = 1.0
    alpha_hidden: float = 1.0
    alpha_attn: float = 1.0
    alpha_emb: float = 1.0
    alpha_task: float = 0.0
    temperature: float = 1.0
    kl_positions: Literal["masked", "all"] = "masked"
    attention_target: Literal["probs", "scores"] = "probs"
    attention_scaling: Literal["teacher", "pruned"] = "teacher"
    mlm_probability: float = 0.15
    train_projections: bool = True
    layer_map: Literal["uniform"] | list[int] = "uniform"
    pruning: Literal["slicing", "masks"] = "slicing"

    name: ClassVar[str] = "homodistil"

    def __post_init__(self) -> None:
        widths = any(
            v is not None
            for v in (self.target_hidden_size, self.target_intermediate_size, self.target_num_key_value_heads)
        )
        modes = [widths, self.target_width_ratio is not None, self.target_params is not None]
        if sum(modes) > 1:
            raise ConfigError(
                "Give one HomoDistil target: method.target_hidden_size (and/or target_intermediate_size, "
                "target_num_key_value_heads), method.target_width_ratio or method.target_params."
            )
        if sum(modes) == 0:
            self.target_width_ratio = 0.5  # the documented default: half of every width
        if self.target_width_ratio is not None and not 0 < self.target_width_ratio <= 1:
            raise ConfigError(f"method.target_width_ratio must be in (0, 1], got {self.target_width_ratio}.")
        if not 0 <= self.t_i <= self.t_f or self.t_f < 1:
            raise ConfigError(
                f"Need 0 <= method.t_i <= method.t_f and t_f >= 1 (steps count from 1), got t_i={self.t_i}, "
                f"t_f={self.t_f}."
            )
        if self.delta_t < 1:
            raise ConfigError(f"method.delta_t must be >= 1, got {self.delta_t}.")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 <= 1):
            raise ConfigError("method.beta1 must be in [0, 1) and method.beta2 in [0, 1].")
        alphas = ("alpha_mlm", "alpha_kl", "alpha_hidden", "alpha_attn", "alpha_emb", "alpha_task")
        if any(getattr(self, a) < 0 for a in alphas) or not sum(getattr(self, a) for a in alphas) > 0:
            raise ConfigError(f"method.{', '.join(alphas)} must be >= 0 and not all 0.")
        if not self.temperature > 0 or not 0 < self.mlm_probability <= 1:
            raise ConfigError("method.temperature must be > 0 and method.mlm_probability in (0, 1].")

    @classmethod
    def tiny(cls) -> HomoDistilConfig:
        """Settings for fast generic tests: half the widths, pruned over 4 steps."""
        return cls(target_width_ratio=0.5, t_i=0, t_f=4, delta_t=1)

    def check_run(self, run: RunView) -> None:
        """The target widths must be reached, and exported: ``t_f`` within the run, the last student.

        Raises:
            ConfigError: ``t_f`` lies beyond ``train.max_steps`` (the target would never be reached), a
                labelled task selects the best checkpoint (it may predate ``t_f``), or the teacher's
                outputs are to be cached (HomoDistil reads its hidden states and attentions), or masks
                are asked for on a sharded student (FSDP).
        """
        if run.engine.sharded and self.pruning == "masks":
            raise ConfigError(
                "method.pruning=masks zeroes rows and columns that FSDP splits across processes: use "
                "method.pruning=slicing (the default) with engine.name=fsdp."
            )
        if run.max_steps and self.t_f > run.max_steps:
            raise ConfigError(
                f"method.t_f={self.t_f} is beyond train.max_steps={run.max_steps}: the student would "
                "never reach the target widths."
            )
        if run.labelled and run.eval_select == "best":
            raise ConfigError(
                "HomoDistil on a labelled task needs eval.select=last: the best dev score would usually "
                "come from a checkpoint before method.t_f, which is wider than the target."
            )

    def uncacheable_teacher(self, run: RunView) -> str | None:
        """Why the teacher's outputs cannot be cached (`checks.teacher_cache_refusal`); ``None``: they can."""
        return "needs the teacher's hidden states and attentions"
