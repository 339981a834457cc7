"""Object-detection plots and model-card sections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from recipes.decode.tensors import decode_to_tensor
from recipes.draw import plots
from recipes.tasks.base import RunContext
from recipes.tasks.detection.metric import detection_outputs, nms_iou_of, post_process

PLOT_SCORE_THRESHOLD = 0.5
# --------------------------------------------------------------------------- plots and card


def _draw_boxes(image: np.ndarray, boxes: np.ndarray, captions: list[str], colour: tuple[int, int, int]) -> np.ndarray:
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 200))
    for box, caption in zip(boxes, captions):
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        if caption:
            left, top, right, bottom = draw.textbbox((x0, y0), caption)
            y = max(0.0, y0 - (bottom - top) - 2)
            draw.rectangle((x0, y, x0 + right - left + 2, y + bottom - top + 2), fill=colour)
            draw.text((x0 + 1, y), caption, fill=(0, 0, 0))
    return np.asarray(canvas)


def prediction_grid(context: RunContext, path: Path, limit: int = 8) -> Path | None:
    """Validation images: ground truth (green) beside predictions (red, label and score ≥ 0.5; when no box
    reaches 0.5, the 3 best-scoring ones, so an under-trained model still shows what it finds)."""
    dataset, raw = context.eval_dataset, context.data.validation
    if dataset is None or len(dataset) == 0:
        return None
    count = min(limit, len(dataset))
    [(_, batch, outputs)] = context.validation_outputs(range(count), batch_size=count)
    device = detection_outputs(outputs).logits.device
    sizes = torch.stack([t["orig_size"] for t in batch["labels"]]).to(device)
    results = post_process(context.image_processor, outputs, sizes, threshold=0.0,
                           nms_iou=nms_iou_of(context.model_config))
    names = context.data.id2label
    images, titles = [], []
    for i, result in enumerate(results):
        row = raw[i]
        pixels = decode_to_tensor(row["image"]).permute(1, 2, 0).numpy()
        gt_xywh = np.asarray(row["objects"]["bbox"], dtype=np.float64).reshape(-1, 4)
        gt = np.column_stack([gt_xywh[:, :2], gt_xywh[:, :2] + gt_xywh[:, 2:]])
        images.append(_draw_boxes(pixels, gt, [names[c] for c in row["objects"]["category"]], (40, 200, 40)))
        titles.append(f"ground truth: {len(gt)} box(es)")
        scores = result["scores"].cpu()
        keep = torch.nonzero(scores >= PLOT_SCORE_THRESHOLD).flatten()
        title = f"predicted (score ≥ {PLOT_SCORE_THRESHOLD}): {len(keep)}"
        if len(keep) == 0:
            keep = torch.argsort(scores, descending=True)[:3]
            title = f"no score ≥ {PLOT_SCORE_THRESHOLD}: best {len(keep)}"
        boxes = result["boxes"].cpu()[keep].numpy()
        captions = [f"{names[int(c)]} {s:.2f}" for c, s in zip(result["labels"][keep].tolist(), scores[keep].tolist())]
        images.append(_draw_boxes(pixels, boxes, captions, (230, 60, 60)))
        titles.append(title)
    return plots.image_grid(images, titles, path, columns=4, suptitle="Validation: ground truth | predictions")


def precision_recall_plot(details: dict[str, Any], path: Path) -> Path | None:
    """Precision-recall curves at IoU 0.5, one per class (COCO interpolation)."""
    curve = details.get("pr_curve") or {}
    if not curve.get("precision_iou50"):
        return None
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    per_class = details.get("per_class", {})
    for name, precision in list(curve["precision_iou50"].items())[:20]:
        ap50 = per_class.get(name, {}).get("ap50")
        label = f"{name} (AP50 {ap50:.3f})" if ap50 is not None else name
        ax.plot(curve["recall"], np.clip(precision, 0, 1), label=label)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall (IoU 0.5)")
    ax.legend(fontsize=8, loc="lower left")
    return plots.save_figure(fig, path)


def _stat(values: dict[str, Any], key: str) -> str:
    value = values.get(key)
    return "-" if value is None else f"{value:g}"


def data_checks_markdown(summary: dict[str, Any]) -> str:
    """Boxes per class, boxes per image and box sizes per split, and what the checks fixed."""
    lines = ["| Split | Images | Negatives | Boxes | Boxes/image (mean, max) | Box width px (median) | "
             "Box height px (median) | small / medium / large |", "|---|---|---|---|---|---|---|---|"]
    per_class_rows = []
    for split in ("train", "validation", "test"):
        stats = summary.get(f"{split}_statistics")
        if not stats:
            continue
        sizes = stats["boxes_by_coco_size"]
        lines.append(
            f"| {split} | {stats['images']} | {stats['negatives']} | {stats['boxes']} | "
            f"{_stat(stats['boxes_per_image'], 'mean')}, {_stat(stats['boxes_per_image'], 'max')} | "
            f"{_stat(stats['box_width_px'], 'median')} | {_stat(stats['box_height_px'], 'median')} | "
            f"{sizes['small']} / {sizes['medium']} / {sizes['large']} |"
        )
        per_class_rows.append((split, stats["boxes_per_class"]))
    if per_class_rows:
        names = list(per_class_rows[0][1])[:50]
        lines += ["", "| Class | " + " | ".join(s for s, _ in per_class_rows) + " |",
                  "|---|" + "---|" * len(per_class_rows)]
        lines += [f"| {n} | " + " | ".join(str(c.get(n, 0)) for _, c in per_class_rows) + " |" for n in names]
    fixes = []
    for split, checks in summary.get("checks", {}).items():
        counts = {k: v for k, v in checks.items() if k != "size_mismatches" and v}
        mismatches = len(checks.get("size_mismatches", []))
        if counts or mismatches:
            described = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items())
            if mismatches:
                described += f"{', ' if described else ''}annotation/image size mismatches: {mismatches}"
            fixes.append(f"- {split}: {described}")
    if fixes:
        lines += ["", "Data checks (details in `run_manifest.json`):", *fixes]
    return "\n".join(lines)




def duplicate_boxes_markdown(nms_iou: float) -> str:
    """The card's note on the model's ``box_nms_iou``: what the figures include, and how to get the same boxes
    from ``pipeline()``."""
    return (
        f"The evaluation above, `predict` and the demo drop a box when a higher-scoring box of the same class overlaps "
        f"it by more than IoU {nms_iou:g} (non-maximum suppression, `box_nms_iou` in `config.json`). "
        "`pipeline(\"object-detection\")` returns the model's boxes without it; to get the same boxes:\n\n"
        "```python\n"
        "import torch\n"
        "from torchvision.ops import batched_nms\n\n"
        "found = detector(\"path/to/image.jpg\", threshold=0.5)\n"
        "boxes = torch.tensor([[f[\"box\"][k] for k in (\"xmin\", \"ymin\", \"xmax\", \"ymax\")] for f in found], "
        "dtype=torch.float32)\n"
        "scores = torch.tensor([f[\"score\"] for f in found])\n"
        "labels = torch.tensor([detector.model.config.label2id[f[\"label\"]] for f in found])\n"
        f"found = [found[i] for i in batched_nms(boxes, scores, labels, {nms_iou:g}).tolist()]\n"
        "```"
    )
