"""``python -m agelab.bench infer model=smlf|smlf_small [ckpt=PATH] [options]``: CPU inference speed.

Measures, side by side in one process, PyTorch eager fp32, ONNX Runtime fp32 and ONNX Runtime int8
(static, QDQ) at batch 1 (one face) and a larger batch, on 1 thread and on all threads, the file
sizes, and where the int8 model's time goes by operator. Without ``ckpt`` an untrained model of the chosen config is used and calibrated on
synthetic faces; with ``ckpt`` (a checkpoint from agelab.train) the trained model is calibrated
on its training faces and the test-split MAE of each runtime is reported too.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate

from agelab.bench import DefaultsHelp
from agelab.config import compose_config, crop_margin
from agelab.config_checks import check_targets
from agelab.errors import ConfigError, require_int
from agelab.exporting.checks import agreement
from agelab.exporting.formats import export_onnx, file_mb
from agelab.exporting.latency import onnx_latency_ms, onnx_operator_ms, torch_latency_ms
from agelab.exporting.pipeline import calibration_images, eval_batches
from agelab.models.summary import count_params
from agelab.exporting.quantize import quantize_int8
from agelab.exporting.runners import ort_runner, torch_runner, torch_threads
from agelab.exporting.wrapper import ExportableAgeModel

RUNTIMES = ("torch_fp32", "onnx_fp32", "onnx_int8")
LABELS = {"torch_fp32": "PyTorch eager fp32", "onnx_fp32": "ONNX Runtime fp32", "onnx_int8": "ONNX Runtime int8"}
# Targets on a 2-core CPU, one face, one thread: (int8 ms per face, int8 file MB).
TARGETS = {"smlf": (3.0, 1.6), "smlf_small": (1.0, 0.5)}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def all_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def synth_calibration(cfg, count: int) -> np.ndarray:
    """``count`` synthetic faces through the config's eval transform, as (N, 3, S, S) float32."""
    from agelab.data.synth import SynthSpec, generate

    size = int(cfg.model.input_size)
    images, _ = generate(SynthSpec(count=count, size=crop_margin(size), seed=1), workers=1)
    transform = instantiate(cfg.data.eval_transform)
    return np.stack([np.asarray(transform(image=image)["image"], dtype=np.float32) for image in images])


def checkpoint_model_name(ckpt: str, cfg) -> str:
    """The model config a checkpoint was trained with (model=...): its stored choice, else the one
    conf/model file with its class, else the class name."""
    from agelab.checkpoint import read_checkpoint
    from agelab.config import CONF_DIR
    from agelab.tracking import CHOICES_KEY

    chosen = (read_checkpoint(ckpt).get(CHOICES_KEY) or {}).get("model")
    if chosen:
        return str(chosen)
    target = cfg.model._target_
    named = [p.stem for p in sorted((CONF_DIR / "model").glob("*.yaml")) if f"_target_: {target}\n" in p.read_text()]
    return named[0] if len(named) == 1 else target.rsplit(".", 1)[-1]


def build(overrides: list[str], ckpt: str | None, calibration_size: int):
    """(wrapper, cfg, calibration images, test batches or None, model name)."""
    if ckpt:
        from agelab.checkpoint import load_module

        module, cfg = load_module(ckpt)
        name = checkpoint_model_name(ckpt, cfg)
        asked = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), name)
        if asked != name:
            raise ConfigError(f"model={asked}, but {ckpt} holds a trained {name}; leave model= out with ckpt=")
        datamodule = instantiate(cfg.data)
        calibration = calibration_images(datamodule, calibration_size)
        batches = eval_batches(datamodule, cfg.data.get("eval_batch_size") or cfg.data.batch_size)
        return ExportableAgeModel.from_module(module), cfg, calibration, batches, name
    cfg = compose_config("train", overrides, output_dir=tempfile.gettempdir())
    check_targets(cfg)
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model)
    head = instantiate(cfg.head, in_features=model.out_features)
    wrapper = ExportableAgeModel(model, head).eval()
    return wrapper, cfg, synth_calibration(cfg, calibration_size), None, cfg.hydra.runtime.choices.model


def state_dict_mb(module: torch.nn.Module) -> float:
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6


def bench_infer(overrides: list[str] = (), ckpt: str | None = None, runs: int = 50, batch_runs: int = 10,
                warmup: int = 5, batch: int = 32, calibration_size: int = 256, out_dir: str | Path | None = None,
                threads: int | None = None) -> dict:
    """Every latency and size, and the test MAE per runtime with a checkpoint. Returns a dict with
    ``rows`` (runtime, batch, threads, ms_per_batch, ms_per_face, x_eager = eager ms / this ms),
    ``sizes_mb`` and, with ``ckpt``, ``accuracy``."""
    counts = {"runs": runs, "batch_runs": batch_runs, "batch": batch, "calibration_size": calibration_size}
    for key, value in counts.items():
        require_int(key, value, 1)
    wrapper, cfg, calibration, batches, name = build(list(overrides), ckpt, calibration_size)
    size = int(cfg.model.input_size)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(out_dir or tmp)
        fp32 = export_onnx(wrapper, folder / "model.onnx", size)
        int8 = quantize_int8(fp32, folder / "model.int8.onnx", calibration)
        result = {"model": name, "input_size": size, "params": count_params(wrapper), "cpu": cpu_name(),
                  "threads_all": threads or all_threads(),
                  "sizes_mb": {"torch_fp32": state_dict_mb(wrapper), "onnx_fp32": file_mb(fp32),
                               "onnx_int8": file_mb(int8)},
                  "rows": []}
        for n, thread_count in ((1, 1), (1, result["threads_all"]), (batch, 1), (batch, result["threads_all"])):
            timing = {"batch": n, "threads": thread_count, "runs": runs if n == 1 else batch_runs, "warmup": warmup}
            ms = {"torch_fp32": torch_latency_ms(wrapper, size, **timing),
                  "onnx_fp32": onnx_latency_ms(fp32, size, **timing),
                  "onnx_int8": onnx_latency_ms(int8, size, **timing)}
            for runtime in RUNTIMES:
                result["rows"].append({"runtime": runtime, "batch": n, "threads": thread_count,
                                       "ms_per_batch": ms[runtime], "ms_per_face": ms[runtime] / n,
                                       "x_eager": ms["torch_fp32"] / ms[runtime]})
        result["int8_operators_ms"] = onnx_operator_ms(int8, size, runs=runs, warmup=warmup)
        if batches is not None:
            runners = {"torch": torch_runner(wrapper), "fp32": ort_runner(fp32, threads=1),
                       "int8": ort_runner(int8, threads=1)}
            with torch_threads(1):
                found = agreement(runners, batches, task=wrapper.task)
            score = "accuracy" if wrapper.task == "group" else "mae"
            result["accuracy"] = {"metric": score, "faces": int(found["count"]),
                                  **{runtime: found[f"{key}_{score}"] for runtime, key in
                                     zip(RUNTIMES, ("torch", "fp32", "int8"))},
                                  "int8_vs_fp32": found[f"int8_{score}"] - found[f"fp32_{score}"]}
    return result


def format_report(result: dict) -> str:
    sizes = result["sizes_mb"]
    lines = [f"bench infer: {result['model']} ({result['input_size']}x{result['input_size']}, "
             f"{result['params'] / 1e6:.3f} M params), CPU {result['cpu']}, {result['threads_all']} threads",
             "", f"{'runtime':<20} {'batch':>5} {'threads':>7} {'ms/batch':>9} {'ms/face':>8} {'x eager':>8}"]
    for row in result["rows"]:
        lines.append(f"{LABELS[row['runtime']]:<20} {row['batch']:>5} {row['threads']:>7} {row['ms_per_batch']:>9.3f} "
                     f"{row['ms_per_face']:>8.3f} {row['x_eager']:>8.2f}")
    lines += ["", f"{'file':<20} {'MB':>8} {'x ONNX fp32':>12}"]
    for runtime, mb in sizes.items():
        label = "PyTorch state_dict" if runtime == "torch_fp32" else LABELS[runtime]
        lines.append(f"{label:<20} {mb:>8.3f} {mb / sizes['onnx_fp32']:>12.2f}")
    operators = result["int8_operators_ms"]
    total = sum(operators.values())
    lines += ["", "ONNX Runtime int8, 1 thread, one face, by operator (its profiler; "
              f"{total:.3f} ms in operators):"]
    lines += [f"  {op:<26} {ms:>7.3f} ms {100 * ms / total:>5.1f} %" for op, ms in list(operators.items())[:8]]
    if "accuracy" in result:
        acc = result["accuracy"]
        lines += ["", f"test split ({acc['faces']} faces), {acc['metric']}: " + ", ".join(
            f"{LABELS[r]} {acc[r]:.4f}" for r in RUNTIMES) + f"; int8 - fp32 = {acc['int8_vs_fp32']:+.4f}"]
    target = TARGETS.get(result["model"])
    if target:
        one = next(r for r in result["rows"] if r["runtime"] == "onnx_int8" and r["batch"] == 1 and r["threads"] == 1)
        met = one["ms_per_face"] <= target[0] and sizes["onnx_int8"] <= target[1]
        lines += ["", f"target (2-core CPU): int8 <= {target[0]} ms/face on 1 thread and <= {target[1]} MB: "
                      f"{one['ms_per_face']:.3f} ms, {sizes['onnx_int8']:.3f} MB -> {'met' if met else 'missed'}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m agelab.bench infer", description=__doc__.splitlines()[0],
                                     formatter_class=DefaultsHelp)
    parser.add_argument("--runs", type=int, default=50, help="timed runs at batch 1 (median reported)")
    parser.add_argument("--batch-runs", type=int, default=10, help="timed runs at --batch")
    parser.add_argument("--warmup", type=int, default=5, help="untimed runs before timing")
    parser.add_argument("--batch", type=int, default=32, help="the batched setting's batch size")
    parser.add_argument("--calibration-size", type=int, default=256, help="faces for int8 calibration")
    parser.add_argument("--threads", type=int, default=None, help="the 'all threads' setting (default: all cores)")
    parser.add_argument("--out-dir", default=None, help="keep the ONNX files here (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help="model=smlf|smlf_small (train config overrides), ckpt=PATH")
    args = parser.parse_intermixed_args(argv)  # options may follow overrides
    ckpt = next((o.split("=", 1)[1] for o in args.overrides if o.startswith("ckpt=")), None)
    overrides = [o for o in args.overrides if not o.startswith("ckpt=")]
    result = bench_infer(overrides, ckpt, args.runs, args.batch_runs, args.warmup, args.batch, args.calibration_size,
                         args.out_dir, args.threads)
    print(format_report(result))
    return result
