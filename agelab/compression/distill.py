"""Knowledge distillation: a student (e.g. smlf_small) learns from the labels and from a trained teacher.

Training loss = (1 - alpha) * the student's own head loss + alpha * a distillation term:

- ``kl`` (Hinton et al. 2015): KL divergence between the teacher's and the student's softmax at
  temperature T, times T^2 (keeps its gradients on the scale of the label loss as T changes). Needs
  both heads to be distributions over the same classes (dex / dldl / mean-variance over the same
  ages, or ce over the 8 groups).
- ``age``: smooth L1 between the student's and the teacher's predicted age; works for any pair of
  heads (regression, ordinal, a student head unlike the teacher's).

``auto`` picks ``kl`` where it applies, else ``age``. Validation and test losses are the student's
own, so its metrics compare directly with a student trained without a teacher.

The teacher is frozen, in eval mode, kept outside the module's parameters and state dict (a
student checkpoint is a plain agelab checkpoint). A teacher with another input size sees the
student's augmented batch resized to its size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agelab.errors import ConfigError
from agelab.heads.ce import GroupCEHead
from agelab.heads.distribution import AgeDistributionHead
from agelab.module import AgeModule

KINDS = ("auto", "kl", "age")


def same_distribution(teacher_head: nn.Module, student_head: nn.Module) -> bool:
    """Whether both heads output softmax logits over the same classes."""
    for kind in (AgeDistributionHead, GroupCEHead):
        if isinstance(teacher_head, kind) and isinstance(student_head, kind):
            return teacher_head.fc.out_features == student_head.fc.out_features
    return False


def kl_distillation(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    student = F.log_softmax(student_logits.float() / temperature, dim=1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * temperature ** 2


def differentiable_age(head: nn.Module, logits: torch.Tensor) -> torch.Tensor:
    """The head's predicted age in a form the loss can follow back: an ordinal head's expected age
    (the sum of P(y > k)) where it predicts by counting P > 0.5, a step with no gradient."""
    decoded = head.decode(logits)
    age_head = getattr(head, "age_head", head)  # a multitask head passes its age head's outputs on
    if getattr(age_head, "prediction", None) == "threshold":
        return decoded["probs"].sum(1)
    return decoded["age"]


class DistillationModule(AgeModule):
    def __init__(self, *args, teacher_ckpt: str, alpha: float = 0.5, temperature: float = 2.0, kind: str = "auto",
                 **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"module.alpha weighs the teacher's term, in [0, 1]; got {alpha!r}")
        if temperature <= 0:
            raise ConfigError(f"module.temperature must be > 0, got {temperature!r}")
        if kind not in KINDS:
            raise ConfigError(f"module.kind must be one of {', '.join(KINDS)}, got {kind!r}")
        from agelab.checkpoint import load_module

        teacher, teacher_cfg = load_module(teacher_ckpt)
        for param in teacher.parameters():
            param.requires_grad_(False)
        # In a list, not an attribute: no parameters, state dict or optimiser entry for the teacher.
        self._teacher = [teacher.eval()]
        self.teacher_input_size = int(teacher_cfg.model.input_size)
        self.alpha, self.temperature = float(alpha), float(temperature)
        if kind == "auto":
            kind = "kl" if same_distribution(teacher.head, self.head) else "age"
        elif kind == "kl" and not same_distribution(teacher.head, self.head):
            raise ConfigError(f"module.kind=kl needs teacher and student heads with the same softmax classes; "
                              f"the teacher ({teacher_ckpt}) has {type(teacher.head).__name__}, the student "
                              f"{type(self.head).__name__}: use module.kind=age")
        self.kind = kind

    @property
    def teacher(self) -> AgeModule:
        return self._teacher[0]

    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        teacher = self.teacher
        weight = next(teacher.parameters())
        if weight.device != images.device:  # Lightning moves the student only
            teacher.to(images.device)  # in place: ``weight`` now lives there too
        if images.shape[-1] != self.teacher_input_size:
            size = (self.teacher_input_size, self.teacher_input_size)
            images = F.interpolate(images.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        with torch.no_grad():
            return teacher.logits(images.to(weight.dtype))

    def distillation_loss(self, logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        teacher_logits = self.teacher_logits(images)
        if self.kind == "kl":
            return kl_distillation(logits, teacher_logits, self.temperature)
        student_age = differentiable_age(self.head, logits)
        teacher_age = self.teacher.head.decode(teacher_logits)["age"]
        return F.smooth_l1_loss(student_age.float(), teacher_age.float())

    def compute_loss(self, logits, batch, stage):
        loss = super().compute_loss(logits, batch, stage)
        if stage != "train" or self.alpha == 0:
            return loss
        distill = self.distillation_loss(logits, batch["image"])
        self.log("train/distill_loss", distill, on_step=False, on_epoch=True, batch_size=len(batch["image"]))
        return (1.0 - self.alpha) * loss + self.alpha * distill

    def train(self, mode: bool = True):
        super().train(mode)
        if hasattr(self, "_teacher"):
            self.teacher.eval()  # never BatchNorm updates or dropout in the teacher
        return self
