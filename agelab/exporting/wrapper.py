"""The graph that gets exported: normalised images in, decoded predictions out.

Decoding (softmax, expected age, spread) happens inside the graph, so a runtime needs nothing
but the exported file: age heads give ``(age, std)``, group heads give the group probabilities;
heads with a gender output (MultiTaskHead) add ``p_male``.
"""

from __future__ import annotations

import torch
from torch import nn

INPUT_NAME = "images"
AGE_OUTPUTS = ("age", "std")
GROUP_OUTPUTS = ("probs",)
GENDER_OUTPUT = "p_male"


class ExportableAgeModel(nn.Module):
    """``images`` (N, 3, S, S) float RGB in [-1, 1] -> ``(age, std)`` or ``probs`` (N, groups)
    [+ ``p_male``]: the tensors of ``output_names``, in that order."""

    def __init__(self, model: nn.Module, head: nn.Module):
        super().__init__()
        self.model, self.head = model, head
        self.task = getattr(head, "task", "age")
        names = GROUP_OUTPUTS if self.task == "group" else AGE_OUTPUTS
        with torch.no_grad():  # which outputs this head decodes to, from one dummy feature vector
            decoded = head.decode(head(torch.zeros(1, model.out_features)))
        missing = [name for name in names if name not in decoded]
        if missing:
            raise ValueError(f"{type(head).__name__}.decode gives no {', '.join(missing)}")
        self.output_names: tuple[str, ...] = names + ((GENDER_OUTPUT,) if GENDER_OUTPUT in decoded else ())

    @classmethod
    def from_module(cls, module: nn.Module) -> "ExportableAgeModel":
        """From an AgeModule (or anything with ``.model`` and ``.head``), in eval mode."""
        return cls(module.model, module.head).eval()

    def forward(self, images: torch.Tensor):
        images = images.clamp(-1.0, 1.0)  # the normalised range: a value beyond it (1e308) cannot make a NaN
        decoded = self.head.decode(self.head(self.model(images)))
        outputs = tuple(decoded[name] for name in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs


def as_outputs(result) -> tuple[torch.Tensor, ...]:
    """The wrapper's result as a tuple, whatever the head (one tensor for group heads)."""
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


def example_input(input_size: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A reproducible batch in the model's input range."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, input_size, input_size, generator=generator) * 2 - 1
