"""Object-detection transforms: augmentation presets that move boxes with the image, the
image processor's inputs, and the padding collate."""

from __future__ import annotations

from typing import Any, TypedDict

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from recipes.config import RecipeError
from recipes.decode.tensors import decode_to_tensor

SCALE_JITTER = (0.75, 0.8125, 0.875, 0.9375, 1.0)
"""Training shortest-edge scales, as fractions of the image processor's ``shortest_edge``."""
PLOT_SCORE_THRESHOLD = 0.5
DETECTION_PRESETS = ("hflip", "basic", "strong")
"""Named augmentation presets besides ``none`` (as in torchvision's detection references)."""
# --------------------------------------------------------------------------- transforms


def processor_size(image_processor: Any) -> dict[str, Any]:
    """The image processor's ``size`` as a dict (``{}`` when it has none)."""
    size = getattr(image_processor, "size", None)
    return size if isinstance(size, dict) else (dict(size.__dict__) if hasattr(size, "__dict__") else {})


def training_resize(image_processor: Any) -> v2.Transform | None:
    """The processor's resize as a v2 transform with scale jitter (``None`` when it cannot be mirrored)."""
    size = processor_size(image_processor)
    if size.get("shortest_edge") and size.get("longest_edge"):
        shortest, longest = int(size["shortest_edge"]), int(size["longest_edge"])
        return v2.RandomShortestSize([round(shortest * f) for f in SCALE_JITTER], max_size=longest, antialias=True)
    if size.get("height") and size.get("width"):
        return v2.Resize((int(size["height"]), int(size["width"])), antialias=True)
    return None


def multi_scale_sizes(image_processor: Any, scales: list[float] | None) -> tuple[tuple[int, int], ...] | None:
    """The training sizes of ``multi_scale``: ``scales`` times the processor's fixed ``height`` x ``width``, in
    multiples of 32 (``None`` when off)."""
    if not scales:
        return None
    size = processor_size(image_processor)
    if not (size.get("height") and size.get("width")):
        raise RecipeError(
            f"multi_scale needs an image processor of a fixed height x width; this one resizes to {size}, whose "
            "training already varies the scale (scale jitter of the shortest edge). Remove multi_scale, or set "
            "image_processor_overrides: {size: {height: H, width: W}}."
        )
    if any(not 0.25 <= scale <= 4 for scale in scales):
        raise RecipeError(f"multi_scale takes fractions of the processor's size between 0.25 and 4, not {scales}.")
    return tuple(sorted({(max(32, round(size["height"] * s / 32) * 32), max(32, round(size["width"] * s / 32) * 32))
                         for s in scales}))


def build_detection_augmentation(preset: str, image_processor: Any, resize: bool = True) -> v2.Compose | None:
    """Named presets on ``uint8`` images with ``tv_tensors.BoundingBoxes`` (``None`` for ``none``).

    ``hflip``: horizontal flip only (then the resize); ``basic``: photometric distortion, zoom-out, horizontal flip
    and multi-scale resizing (scale jitter); ``strong``: ``basic`` plus a random IoU crop. Degenerate boxes are
    removed at the end. ``resize=False`` leaves the resize out (``multi_scale`` resizes each batch).
    """
    if preset == "none":
        return None
    if preset not in DETECTION_PRESETS:
        raise RecipeError(
            f"Unknown augmentation preset `{preset}` for object-detection: use none, {', '.join(DETECTION_PRESETS)}."
        )
    mean = tuple(round(255 * m) for m in (getattr(image_processor, "image_mean", None) or (0.5, 0.5, 0.5)))
    steps: list[v2.Transform] = []
    if preset in ("basic", "strong"):
        steps += [
            v2.RandomPhotometricDistort(p=0.5),
            v2.RandomZoomOut(fill={tv_tensors.Image: mean, "others": 0}, side_range=(1.0, 2.0), p=0.3),
        ]
    if preset == "strong":
        steps.append(v2.RandomIoUCrop())
    steps.append(v2.RandomHorizontalFlip(p=0.5))
    resize = training_resize(image_processor) if resize else None
    if resize is not None:
        steps.append(resize)
    steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)]
    return v2.Compose(steps)


def augment_sample(
    augment: v2.Transform, image: torch.Tensor, boxes_xywh: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply ``augment`` to one image and its boxes together; boxes come back as ``xywh``."""
    height, width = image.shape[-2:]
    boxes = tv_tensors.BoundingBoxes(boxes_xywh, format="XYWH", canvas_size=(height, width))
    out = augment({"image": tv_tensors.Image(image), "boxes": boxes, "labels": labels})
    moved = v2.functional.convert_bounding_box_format(out["boxes"], new_format=tv_tensors.BoundingBoxFormat.XYWH)
    return out["image"].as_subclass(torch.Tensor), moved.as_subclass(torch.Tensor), out["labels"]


def coco_annotation(image_id: int, boxes_xywh: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """One image's boxes as the COCO-detection annotation image processors take."""
    return {
        "image_id": int(image_id),
        "annotations": [
            {"bbox": [float(v) for v in box], "category_id": int(label), "area": float(box[2] * box[3]), "iscrowd": 0}
            for box, label in zip(boxes_xywh.tolist(), labels.tolist())
        ],
    }


def transform_detection_batch(
    batch: dict[str, list], *, image_processor: Any, augment: v2.Transform | None, processor_resizes: bool,
    batch_sizes: tuple[tuple[int, int], ...] | None = None,
) -> dict[str, list]:
    """``with_transform`` function: decode, augment image + boxes, then let the image processor make inputs.

    Each image is processed on its own (no padding here): the collate function pads the batch. ``batch_sizes``
    (``multi_scale``): the images of one call (the data loader fetches a batch in one call) are resized to one
    ``(height, width)`` drawn from them, as RT-DETR trains.
    """
    if batch_sizes:
        size = batch_sizes[int(torch.randint(len(batch_sizes), ()))]
        augment = v2.Compose([*([augment] if augment is not None else []), v2.Resize(size, antialias=True),
                              v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0)])
    pixel_values, targets = [], []
    for record, image_id, objects in zip(batch["image"], batch["image_id"], batch["objects"]):
        image = decode_to_tensor(record)
        boxes = torch.tensor(objects["bbox"], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor(objects["category"], dtype=torch.int64)
        if augment is not None:
            image, boxes, labels = augment_sample(augment, image, boxes, labels)
        encoded = image_processor(
            images=image,
            annotations=coco_annotation(image_id, boxes, labels),
            return_tensors="pt",
            do_resize=processor_resizes,
            do_pad=False,
        )
        pixel_values.append(encoded["pixel_values"][0])
        targets.append(dict(encoded["labels"][0]))
    return {"pixel_values": pixel_values, "labels": targets}


class DetectionTarget(TypedDict, total=False):
    """One image's target as DETR-like models take it (boxes: normalised ``cxcywh``)."""

    class_labels: torch.Tensor
    boxes: torch.Tensor
    image_id: torch.Tensor
    area: torch.Tensor
    iscrowd: torch.Tensor
    orig_size: torch.Tensor
    size: torch.Tensor


class DetectionBatch(TypedDict, total=False):
    """Model inputs of one batch."""

    pixel_values: torch.Tensor
    pixel_mask: torch.Tensor
    labels: list[DetectionTarget]


READS_PIXEL_MASK = frozenset({"detr", "conditional_detr", "deformable_detr", "dab_detr", "table-transformer"})
"""Detectors whose encoder and decoder read ``pixel_mask`` (positions and attention cover each image's own pixels),
so boxes are relative to each unpadded image. The others (RT-DETR, RT-DETRv2, D-FINE, YOLOS, …) see the whole padded
canvas: their anchors and boxes are relative to it."""


def boxes_in_canvas_frame(model_type: str | None) -> bool:
    """Whether a ``model_type`` detector predicts boxes relative to the padded canvas of its batch."""
    return model_type is not None and model_type not in READS_PIXEL_MASK


def collate_detection(
    examples: list[dict[str, Any]], *, return_pixel_mask: bool, canvas_frame: bool = False
) -> DetectionBatch:
    """Pad the images of a batch to a common size (bottom/right) and put the boxes in the model's frame.

    Models that read ``pixel_mask`` (DETR, Conditional and Deformable DETR) see only each image's own pixels:
    target boxes stay normalised to each unpadded image, as in DETR. Models that ignore it (``canvas_frame``:
    RT-DETR, D-FINE, YOLOS) place their anchors on the whole padded canvas, so their targets are normalised to the
    canvas, and ``orig_size`` / ``size`` grow by the padding, so that evaluation scales predictions and ground truth
    back to the original image's pixels (the padding lies beyond its right and bottom edges).
    """
    heights = [e["pixel_values"].shape[-2] for e in examples]
    widths = [e["pixel_values"].shape[-1] for e in examples]
    channels = examples[0]["pixel_values"].shape[0]
    pixels = torch.zeros((len(examples), channels, max(heights), max(widths)), dtype=examples[0]["pixel_values"].dtype)
    mask = torch.zeros((len(examples), max(heights), max(widths)), dtype=torch.int64)
    for i, (example, height, width) in enumerate(zip(examples, heights, widths)):
        pixels[i, :, :height, :width] = example["pixel_values"]
        mask[i, :height, :width] = 1
    targets = [e["labels"] for e in examples]
    if canvas_frame:
        targets = [to_canvas_frame(t, (h, w), (max(heights), max(widths))) for t, h, w in zip(targets, heights, widths)]
    batch: DetectionBatch = {"pixel_values": pixels, "labels": targets}
    if return_pixel_mask:
        batch["pixel_mask"] = mask
    return batch


def to_canvas_frame(target: DetectionTarget, size: tuple[int, int], canvas: tuple[int, int]) -> DetectionTarget:
    """``target`` of an image of ``size`` placed at the top left of a ``canvas``: boxes normalised to the canvas,
    ``size`` = the canvas, ``orig_size`` = the original image plus the padding at its scale (float)."""
    if tuple(size) == tuple(canvas):
        return target
    scale_y, scale_x = canvas[0] / size[0], canvas[1] / size[1]
    moved = dict(target)
    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
    moved["boxes"] = boxes / torch.tensor([scale_x, scale_y, scale_x, scale_y])
    moved["size"] = torch.tensor(canvas)
    if "orig_size" in target:
        original = torch.as_tensor(target["orig_size"], dtype=torch.float32)
        moved["orig_size"] = original * torch.tensor([scale_y, scale_x])
    return moved  # type: ignore[return-value]
