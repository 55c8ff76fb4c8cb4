"""A table of the model zoo: parameters, forward FLOPs per face, and the papers' figures.

FLOPs are counted by torch.utils.flop_counter.FlopCounterMode (model in eval mode, one face at
the model's default input size; a multiply-add counts as 2 FLOPs, and only convolutions and
matrix products are counted — activations, pooling and normalisation are left out).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from agelab.heads.dex import DexHead
from agelab.models.registry import MODELS, build_model

DEX_CLASSES = 66  # SMLF-Net's head: ages 0..64 and 65+
# Figures the papers report (docs/reference_systems.md); MORPH II MAE unless noted.
PAPER = {
    "smlf": "1.37 M params, 5.5 MB; MAE 3.09; RPi 3B 169 ms/face",
    "smlf_small": "0.38 M params, 1.6 MB; MAE 3.41; RPi 3B 31 ms/face",
    "inception": "MAE 3.32 (SMLF-Net paper's Inception)",
    "shufflenet": "MAE 3.54 (SMLF-Net paper's ShuffleNet)",
    "levi_hassner": "Adience 50.7 % exact / 84.7 % one-off (227x227 crops)",
}
COLUMNS = ("model", "input", "features", "params", "params + DEX-66", "fp32 MB", "MFLOPs/face", "paper")


def count_params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def blank_face(model: torch.nn.Module) -> torch.Tensor | None:
    """One blank face of the model's input size and channels, or None when the model does not say."""
    size = getattr(model, "input_size", None)
    conv = next((m for m in model.modules() if isinstance(m, torch.nn.Conv2d)), None)
    if not isinstance(size, int) or conv is None:
        return None
    return torch.zeros(1, conv.in_channels, size, size)


@torch.no_grad()
def forward_flops(model: torch.nn.Module, head: torch.nn.Module) -> int | None:
    """FLOPs of model + head on one blank face (eval mode; the modes are restored), or None when the
    model does not say its input size."""
    model = getattr(model, "_orig_mod", model)  # count the plain network, not a torch.compile wrapper
    face = blank_face(model)
    if face is None:
        return None
    modes = [(m, m.training) for m in (model, head)]
    parameter = next(model.parameters())
    try:
        model.eval(), head.eval()
        with FlopCounterMode(display=False) as counter:
            head(model(face.to(parameter.device, parameter.dtype)))
    finally:
        for module, training in modes:
            module.train(training)
    return counter.get_total_flops()


def summary_rows(names=None) -> list[dict]:
    rows = []
    for name in names or sorted(MODELS):
        model = build_model(name)
        head = DexHead(model.out_features, max_age=DEX_CLASSES - 1)
        with_head = count_params(model, head)
        rows.append({
            "model": name, "input": f"{model.input_size}x{model.input_size}", "features": model.out_features,
            "params": f"{count_params(model) / 1e6:.2f} M", "params + DEX-66": f"{with_head / 1e6:.2f} M",
            "fp32 MB": f"{with_head * 4 / 1e6:.1f}",
            "MFLOPs/face": f"{forward_flops(model, head) / 1e6:.0f}",
            "paper": PAPER.get(name, ""),
        })
    return rows


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def rich_table(rows: list[dict]):
    from rich.table import Table

    table = Table(title="agelab model zoo (default input sizes, FLOPs per face, forward only)")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("model", "paper") else "right")
    for row in rows:
        table.add_row(*(str(row[c]) for c in COLUMNS))
    return table
