"""How far each detector gets on the car plates in the same CPU time budget, from the same ImageNet backbone.

    python -m benchmarks.detection_convergence                       # 30 minutes of training per detector
    python -m benchmarks.detection_convergence --minutes 10 --milestones 2.5,5,10 --json convergence.json
    python -m benchmarks.detection_convergence --quick               # a smoke test (a few steps each)
    python -m benchmarks.detection_convergence --only small --json a.json   # one detector per process (core),
    python -m benchmarks.detection_convergence --merge a.json b.json         # then one table and curve

Detectors, all trained on the same seeded split of ``../shared/datasets/car-plates`` (``train_val_split`` 0.2, seed
42: the validation photos are never trained on) and scored by the same COCO evaluation:

- ``plates-small``: ``configs/plates-small.yaml`` (RT-DETRv2 on the pretrained MobileNetV2-0.35 backbone; its
  evaluation drops duplicate boxes at the recipe's ``box_nms_iou``, as FCOS's own post-processing does at IoU 0.6);
- ``plates-small, random init``: the same architecture and recipe, every weight random (backbone at the full rate);
- ``conditional DETR``: the shared Conditional DETR checkpoint (same pretrained backbone, random transformer),
  the DETR fine-tuning recipe (``configs/plates-detr.yaml``) at 320/512 px;
- ``torchvision FCOS``: torchvision's FCOS with an FPN on the same pretrained backbone tensors, a plain loop
  (AdamW, cosine, horizontal flips): the reference a user might pick instead;
- ``plates-small, plain loop`` (``--only plain``, not in the default set): the recipe's model and image processor
  trained in a plain PyTorch loop (constant rate, flips), as a check that the Trainer path loses nothing.

The budget is wall-clock training time, evaluation left out: every detector trains until it has spent exactly
that long (to within one step), with its learning rate warmed up over the first 5 % of the time and decayed along a
cosine to 0 at the end of the time (the recipes' own step-based warm-up and cosine, laid over time instead of
steps; the plain loop keeps its constant rate). mAP50 is evaluated when training time passes each milestone and
at the end. The table and a curve of mAP50 against training minutes (``--plot``) are printed and saved. On a busy
machine every detector gets fewer steps alike: compare within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BACKBONE = "pretrained/conditional_detr-mobilenet_v2_0.35-keras-imagenet-backbone"
SEED = 42
RECIPE = REPO / "configs" / "plates-small.yaml"
VALIDATION_FRACTION = 0.2
COMMON = ["--report_to", "none", "--save_strategy", "no", "--load_best_model_at_end", "false", "--make_plots",
          "false", "--auto_resume", "false", "--bf16", "false", "--train_val_split", str(VALIDATION_FRACTION),
          "--seed", str(SEED), "--logging_steps", "10", "--dataloader_num_workers", "1"]
CONDITIONAL_DETR = [str(REPO / "configs" / "plates-detr.yaml"), "--model_name_or_path", "{shared}/" + BACKBONE,
                    "--image_processor_overrides", '{"size": {"shortest_edge": 320, "longest_edge": 512}}',
                    "--per_device_train_batch_size", "8", "--learning_rate", "2e-4", "--backbone_learning_rate",
                    "2e-5", "--early_stopping_patience", "1000", "--lr_scheduler_type", "cosine"]
RANDOM_BACKBONE = {"model_type": "timm_backbone", "backbone": "mobilenetv2_035", "out_indices": [2, 3, 4],
                   "use_pretrained_backbone": False, "freeze_batch_norm_2d": False}


@dataclass
class Curve:
    """mAP50 (and mAP) against training minutes, and the run's totals."""

    name: str
    minutes: list[float]
    map_50: list[float]
    map: list[float]
    steps: int
    seconds_per_step: float


def recipe_settings() -> dict[str, Any]:
    """``configs/plates-small.yaml`` as written (the references follow its sizes)."""
    import yaml

    return yaml.safe_load(RECIPE.read_text())


def plates_small_random_init() -> list[str]:
    """``plates-small`` with a randomly initialised backbone of the same architecture (trained at the full rate)."""
    recipe = recipe_settings()
    overrides = {**recipe["config_overrides"], "backbone_config": RANDOM_BACKBONE, "freeze_backbone_batch_norms": False,
                 "encoder_in_channels": [16, 32, 112], "feat_strides": [8, 16, 32], "encode_proj_layers": [2],
                 "decoder_in_channels": [recipe["config_overrides"]["encoder_hidden_dim"]] * 3,
                 "decoder_n_levels": recipe["config_overrides"].get("num_feature_levels", 3)}
    processor = {**recipe.get("image_processor_overrides", {}), "do_normalize": True, "image_mean": [0.5] * 3,
                 "image_std": [0.5] * 3}
    return [str(RECIPE), "--backbone_name_or_path", "",
            "--config_overrides", json.dumps(overrides), "--image_processor_overrides", json.dumps(processor),
            "--backbone_learning_rate", str(recipe["learning_rate"])]


WARMUP_FRACTION = 0.05
"""Share of the budget spent warming the learning rate up linearly (the cosine decay fills the rest)."""
STEP_BOUND = 1_000_000
"""``max_steps`` of a Trainer run: the budget, not the step count, ends it."""


def budget_factor(fraction: float, cosine: bool) -> float:
    """Learning-rate factor once ``fraction`` of the training time is spent: a linear warm-up over the first
    :data:`WARMUP_FRACTION`, then a cosine decay to 0 at the end of the budget (``cosine=False``: constant)."""
    if not cosine:
        return 1.0
    fraction = min(max(fraction, 0.0), 1.0)
    warmup = min(1.0, (fraction + 1e-3) / WARMUP_FRACTION)
    return warmup * 0.5 * (1 + math.cos(math.pi * fraction))


class TrainingClock:
    """Training time of a run, evaluation left out, against its budget and milestones (in seconds)."""

    def __init__(self, minutes: float, milestones: list[float]) -> None:
        self.budget = minutes * 60
        self.pending = sorted(m * 60 for m in milestones if m * 60 < self.budget)
        self.trained = 0.0
        self._since: float | None = None

    def start(self) -> None:
        """(Re)start counting: at the beginning, and after each evaluation."""
        self._since = time.perf_counter()

    def tick(self) -> None:
        """Count the time since :meth:`start` or the last tick as training."""
        now = time.perf_counter()
        if self._since is not None:
            self.trained += now - self._since
        self._since = now

    @property
    def spent(self) -> bool:
        return self.trained >= self.budget

    def milestone_reached(self) -> bool:
        """Whether training time passed the next milestone (before the end of the budget) since the last call."""
        reached = bool(self.pending) and self.trained >= self.pending[0]
        while self.pending and self.trained >= self.pending[0]:
            self.pending.pop(0)
        return reached


def trainer_curve(name: str, arguments: list[str], data_dir: Path, minutes: float, milestones: list[float],
                  work: Path) -> Curve:
    """Train a recipe for ``minutes`` of training time (cosine over that time), evaluating at ``milestones``."""
    from transformers import TrainerCallback

    from recipes.lifecycle import evaluate, fit, plan_training, prepare_data, prepare_model, start
    from recipes.parse import parse_recipe

    clock = TrainingClock(minutes, milestones)
    points: list[tuple[float, float, float]] = []

    class OnTheClock(TrainerCallback):
        """Sets the learning rate by the share of the budget spent (after each step, for the next), evaluates at
        milestones, stops at the end."""

        def on_train_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None,
                           lr_scheduler: Any = None, **kwargs: Any) -> None:
            # The (constant) scheduler's factor becomes the clock's, so the logged learning rate is the real one.
            scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate may wrap it
            scheduler.lr_lambdas = [lambda _: budget_factor(clock.trained / clock.budget, cosine=True)] * len(
                optimizer.param_groups)
            for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
                group["lr"] = base * budget_factor(0.0, cosine=True)
            clock.start()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock.tick()
            control.should_evaluate = clock.milestone_reached() and not clock.spent
            control.should_training_stop = clock.spent

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
            points.append((clock.trained / 60, metrics["eval_map_50"], metrics["eval_map"]))
            clock.start()  # evaluation time is not training time

    # The budget ends the run: a constant scheduler whose rates the callback scales, no step-based evaluation.
    recipe = parse_recipe([*arguments, "--train_dir", str(data_dir), *COMMON, "--output_dir", str(work / name),
                           "--max_steps", str(STEP_BOUND), "--lr_scheduler_type", "constant", "--warmup_steps", "0",
                           "--eval_strategy", "no", "--disable_tqdm", "true"])  # a bar to STEP_BOUND would mislead
    state = start(recipe)
    prepare_data(state)
    plan_training(state)
    prepare_model(state).add_callback(OnTheClock())
    fit(state)
    evaluate(state)  # the final point (on_evaluate)
    steps = state.trainer.state.global_step
    return Curve(name, *(list(v) for v in zip(*points)), steps=steps, seconds_per_step=clock.trained / steps)


# --------------------------------------------------------------------------- torchvision FCOS reference


class FeaturePyramidBackbone(torch.nn.Module):
    """The pretrained MobileNetV2 feature levels (strides 8/16/32) with torchvision's FPN (+ P6, P7 for FCOS)."""

    def __init__(self, backbone: torch.nn.Module, channels: list[int], out_channels: int = 64) -> None:
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelP6P7

        super().__init__()
        self.body = backbone
        self.fpn = FeaturePyramidNetwork(channels, out_channels, extra_blocks=LastLevelP6P7(out_channels,
                                                                                            out_channels))
        self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        from collections import OrderedDict

        maps = self.body(images).feature_maps
        return self.fpn(OrderedDict((str(i), m) for i, m in enumerate(maps)))


def _split(data_dir: Path) -> tuple[Any, Any]:
    from recipes.tasks.detection.data import DetectionDataArguments, load_detection_data

    data = load_detection_data(DetectionDataArguments(train_dir=str(data_dir), train_val_split=VALIDATION_FRACTION,
                                                      class_names=["licence"]), seed=SEED)
    return data.train, data.validation


def _tensor_and_boxes(row: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from recipes.decode.tensors import decode_to_tensor

    image = decode_to_tensor(row["image"]).float() / 255
    xywh = torch.tensor(row["objects"]["bbox"], dtype=torch.float32).reshape(-1, 4)
    boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
    return image, boxes, torch.tensor(row["objects"]["category"], dtype=torch.int64) + 1  # 0 = background


def _fcos_scores(model: torch.nn.Module, validation: Any) -> tuple[float, float]:
    from recipes.metrics.coco import coco_inputs, run_coco_eval

    truths, detections, sizes = [], [], []
    for start in range(0, len(validation), 8):
        rows = [validation[i] for i in range(start, min(start + 8, len(validation)))]
        samples = [_tensor_and_boxes(row) for row in rows]
        for (image, boxes, labels), output in zip(samples, model([s[0] for s in samples])):
            truths.append((boxes.numpy(), (labels - 1).numpy()))
            detections.append((output["boxes"].numpy(), output["scores"].numpy(), (output["labels"] - 1).numpy()))
            sizes.append(tuple(image.shape[-2:]))
    ground_truth, found = coco_inputs(truths, detections, 1, sizes)
    if len(found) == 0:
        return 0.0, 0.0
    stats = run_coco_eval(ground_truth, found).stats
    return float(stats[1]), float(stats[0])


def fcos_curve(shared: Path, data_dir: Path, minutes: float, milestones: list[float],
               batch_size: int = 8, learning_rate: float = 1e-3) -> Curve:
    """torchvision FCOS on the same backbone tensors and at the recipe's input size, trained in a plain loop for
    ``minutes``."""
    from torchvision.models.detection import FCOS
    from transformers import AutoBackbone

    from recipes.model.backbones import load_backbone_source

    torch.manual_seed(SEED)
    source = load_backbone_source(str(shared / BACKBONE), "rt_detr_v2")
    body = AutoBackbone.from_config(source.config)
    body.load_state_dict(source.state_dict)
    size = recipe_settings()["image_processor_overrides"]["size"]
    # the recipe's input size, aspect kept: a 400x300 photo becomes 416x312 against the recipe's 416x320
    model = FCOS(FeaturePyramidBackbone(body, source.channels), num_classes=2, min_size=size["height"],
                 max_size=max(size["height"], size["width"]),
                 image_mean=[0.5] * 3, image_std=[0.5] * 3, detections_per_img=100, score_thresh=0.01)
    train, validation = _split(data_dir)
    backbone_params = [p for n, p in model.named_parameters() if n.startswith("backbone.body") and p.requires_grad]
    other_params = [p for n, p in model.named_parameters() if not n.startswith("backbone.body") and p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": backbone_params, "lr": learning_rate / 10},
                                   {"params": other_params, "lr": learning_rate}], weight_decay=1e-4)
    generator = torch.Generator().manual_seed(SEED)

    def step() -> None:
        indices = torch.randint(len(train), (batch_size,), generator=generator).tolist()
        images, targets = [], []
        for i in indices:
            image, boxes, labels = _tensor_and_boxes(train[i])
            if torch.rand((), generator=generator) < 0.5:  # horizontal flip
                image = image.flip(-1)
                boxes = torch.stack([image.shape[-1] - boxes[:, 2], boxes[:, 1], image.shape[-1] - boxes[:, 0],
                                     boxes[:, 3]], dim=1)
            images.append(image)
            targets.append({"boxes": boxes, "labels": labels})
        losses = model(images, targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    return timed_loop("torchvision FCOS", step, lambda: _fcos_scores(model, validation), optimizer, minutes,
                      milestones, model, cosine=True)


def timed_loop(name: str, step: Any, score: Any, optimizer: torch.optim.Optimizer, minutes: float,
               milestones: list[float], model: torch.nn.Module, cosine: bool) -> Curve:
    """Run ``step`` for ``minutes`` of training time, scoring at ``milestones`` and at the end.

    ``cosine``: a linear warm-up and a cosine decay over the training time (else the learning rate stays
    constant)."""
    clock = TrainingClock(minutes, milestones)
    base_rates = [group["lr"] for group in optimizer.param_groups]
    points, steps = [], 0
    model.train()
    clock.start()
    while not clock.spent:
        factor = budget_factor(clock.trained / clock.budget, cosine)
        for group, rate in zip(optimizer.param_groups, base_rates):
            group["lr"] = rate * factor
        step()
        steps += 1
        clock.tick()
        if clock.milestone_reached() or clock.spent:
            model.eval()
            with torch.no_grad():
                points.append((clock.trained / 60, *score()))
            model.train()
            clock.start()
    return Curve(name, [p[0] for p in points], [p[1] for p in points], [p[2] for p in points],
                 steps=steps, seconds_per_step=clock.trained / steps)


# --------------------------------------------------------------------------- the same RT-DETRv2, plain loop


def plain_loop_curve(shared: Path, data_dir: Path, minutes: float, milestones: list[float],
                     batch_size: int = 4, learning_rate: float = 2e-4) -> Curve:
    """``plates-small``'s model and image processor (built by the recipe), trained in a plain PyTorch loop.

    The loop of the issue that asked for this recipe: AdamW at a constant rate for the whole model, weight decay
    1e-4, gradients clipped at 0.1, horizontal flips, the processor's fixed resize; no Trainer, no project
    transforms, collate or metric. Scored by the processor's post-processing and the same COCO evaluation, so a gap
    to ``plates-small`` is the recipe (schedule, augmentation) or the Trainer path, not the model.
    """
    from transformers import AutoModelForObjectDetection

    from recipes.decode.tensors import decode_to_tensor
    from recipes.model.build import build_image_processor, build_model
    from recipes.parse import parse_recipe

    torch.manual_seed(SEED)
    recipe = parse_recipe([str(RECIPE), "--train_dir", str(data_dir),
                           "--backbone_name_or_path", str(shared / BACKBONE)])
    processor = build_image_processor(recipe.model)
    model = build_model(AutoModelForObjectDetection, recipe.model, {0: "licence"}).model
    train, validation = _split(data_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(SEED)

    def encode(rows: list[dict[str, Any]], flips: list[bool]) -> dict[str, Any]:
        images, annotations = [], []
        for index, (row, flip) in enumerate(zip(rows, flips)):
            image = decode_to_tensor(row["image"])
            boxes = torch.tensor(row["objects"]["bbox"], dtype=torch.float32).reshape(-1, 4)
            if flip:
                image = image.flip(-1)
                boxes[:, 0] = image.shape[-1] - boxes[:, 0] - boxes[:, 2]
            images.append(image)
            annotations.append({"image_id": index, "annotations": [
                {"bbox": box.tolist(), "category_id": 0, "area": float(box[2] * box[3]), "iscrowd": 0}
                for box in boxes]})
        return processor(images=images, annotations=annotations, return_tensors="pt")

    def step() -> None:
        indices = torch.randint(len(train), (batch_size,), generator=generator).tolist()
        flips = (torch.rand(batch_size, generator=generator) < 0.5).tolist()
        inputs = encode([train[i] for i in indices], flips)
        loss = model(pixel_values=inputs["pixel_values"], labels=inputs["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()

    def score() -> tuple[float, float]:
        from recipes.metrics.coco import coco_inputs, run_coco_eval

        truths, detections, sizes = [], [], []
        for start in range(0, len(validation), 8):
            rows = [validation[i] for i in range(start, min(start + 8, len(validation)))]
            inputs = encode(rows, [False] * len(rows))
            heights_widths = torch.stack([label["orig_size"] for label in inputs["labels"]])
            found = processor.post_process_object_detection(model(pixel_values=inputs["pixel_values"]),
                                                            threshold=0.0, target_sizes=heights_widths)
            for row, result, size in zip(rows, found, heights_widths.tolist()):
                xywh = torch.tensor(row["objects"]["bbox"], dtype=torch.float32).reshape(-1, 4)
                truths.append((torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1).numpy(),
                               torch.tensor(row["objects"]["category"]).numpy()))
                detections.append((result["boxes"].numpy(), result["scores"].numpy(), result["labels"].numpy()))
                sizes.append(tuple(size))
        ground_truth, rows_found = coco_inputs(truths, detections, 1, sizes)
        if len(rows_found) == 0:
            return 0.0, 0.0
        stats = run_coco_eval(ground_truth, rows_found).stats
        return float(stats[1]), float(stats[0])

    return timed_loop("plates-small, plain loop", step, score, optimizer, minutes, milestones, model,
                      cosine=False)


# --------------------------------------------------------------------------- report


def plot(curves: list[Curve], path: Path, budget: float) -> Path:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=120)
    axes = figure.add_subplot()
    for curve in curves:
        axes.plot(curve.minutes, curve.map_50, marker="o", label=curve.name)
    right = max([budget, *(m for curve in curves for m in curve.minutes)]) * 1.02  # a run may overshoot its budget
    axes.set(xlabel="training minutes (this machine)", ylabel="validation mAP50", ylim=(0, 1), xlim=(0, right),
             title="Car plates: mAP50 against training time, same pretrained backbone")
    axes.axhline(0.8, color="grey", linestyle=":", linewidth=1)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    return path


def value_at(curve: Curve, minute: float) -> float | None:
    """mAP50 of the evaluation made when training time passed ``minute`` (the first at or after it, within one
    step of it; ``None`` when the run ended before)."""
    passed = [m50 for m, m50 in zip(curve.minutes, curve.map_50) if m >= minute - 1e-6]
    return passed[0] if passed else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="training time per detector")
    parser.add_argument("--milestones", default="5,10,20,30", help="training minutes at which mAP50 is measured")
    parser.add_argument("--only", default="", help="comma-separated subset: small,random,cdetr,fcos,plain")
    parser.add_argument("--quick", action="store_true", help="15 s each on 24 photos (a smoke test)")
    parser.add_argument("--shared", type=Path, default=SHARED, help="folder holding datasets/ and pretrained/")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--plot", type=Path, default=Path("detection_convergence.png"), help="the curve (PNG)")
    parser.add_argument("--merge", type=Path, nargs="+", help="report the --json files of earlier runs together "
                        "(no training): detectors run as separate processes, e.g. one per core")
    options = parser.parse_args()
    if options.merge:
        report(*merged(options.merge), options)
        return
    if options.quick:
        options.minutes, options.milestones = min(options.minutes, 0.25), "0.125,0.25"
    milestones = sorted(float(m) for m in options.milestones.split(",") if float(m) <= options.minutes)
    milestones = milestones or [options.minutes]
    data_dir = options.shared / "datasets" / "car-plates"
    chosen = set(filter(None, options.only.split(","))) or {"small", "random", "cdetr", "fcos"}
    curves: list[Curve] = []
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if options.quick:
            data_dir = _quick_subset(data_dir, work / "plates")
        trainer_runs = {
            "small": ("plates-small", [str(RECIPE)]),
            "random": ("plates-small, random init", plates_small_random_init()),
            "cdetr": ("conditional DETR", [a.replace("{shared}", str(options.shared)) for a in CONDITIONAL_DETR]),
        }
        for key, (name, arguments) in trainer_runs.items():
            if key in chosen:
                curves.append(trainer_curve(name, arguments, data_dir, options.minutes, milestones, work))
        if "fcos" in chosen:
            curves.append(fcos_curve(options.shared, data_dir, options.minutes, milestones))
        if "plain" in chosen:
            curves.append(plain_loop_curve(options.shared, data_dir, options.minutes, milestones))
    report(curves, milestones, f"{data_dir}; {torch.get_num_threads()} threads", options.minutes, options)


def merged(paths: list[Path]) -> tuple[list[Curve], list[float], str, float]:
    """The curves of several ``--json`` files of one budget, their milestones, sources and budget (minutes)."""
    documents = [json.loads(path.read_text()) for path in paths]
    budgets = {document["minutes"] for document in documents}
    if len(budgets) != 1:
        raise SystemExit(f"The files were run with different budgets ({sorted(budgets)} minutes): merge runs of one.")
    curves = [Curve(**curve) for document in documents for curve in document["curves"]]
    budget = budgets.pop()
    milestones = sorted({m for document in documents for m in document.get("milestones", [])}) or [budget]
    sources = sorted({document.get("source", "?") for document in documents})
    return curves, milestones, " + ".join(sources), budget


def report(curves: list[Curve], milestones: list[float], source: str, minutes: float,
           options: argparse.Namespace) -> None:
    """Print the table, save the curve (and ``--json``)."""
    print(f"\nCar plates ({source}), validation: {VALIDATION_FRACTION:.0%} held out (seed {SEED}); "
          f"{minutes:g} training minutes each")
    header = "".join(f"{f'@{m:g} min':>12}" for m in milestones)
    print(f"  {'detector':<28}{'mAP50':>8}{'mAP':>8}{'steps':>7}{'s/step':>8}{'min':>6}{header}")
    for curve in curves:
        cells = "".join(f"{'-' if value_at(curve, m) is None else f'{value_at(curve, m):.3f}':>12}"
                        for m in milestones)
        print(f"  {curve.name:<28}{curve.map_50[-1]:>8.3f}{curve.map[-1]:>8.3f}{curve.steps:>7}"
              f"{curve.seconds_per_step:>8.2f}{curve.steps * curve.seconds_per_step / 60:>6.1f}{cells}")
    print(f"  curve: {plot(curves, options.plot, minutes)}")
    if options.json:
        options.json.write_text(json.dumps({"minutes": minutes, "milestones": milestones, "source": source,
                                            "curves": [vars(c) for c in curves]}, indent=2))


def _quick_subset(source: Path, target: Path, count: int = 24) -> Path:
    """The first ``count`` photos of ``source`` (links), for ``--quick``."""
    for kind in ("images", "annotations"):
        (target / kind).mkdir(parents=True)
    for image in sorted((source / "images").glob("*.png"))[:count]:
        (target / "images" / image.name).symlink_to(image)
        xml = source / "annotations" / f"{image.stem}.xml"
        (target / "annotations" / xml.name).symlink_to(xml)
    return target


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
