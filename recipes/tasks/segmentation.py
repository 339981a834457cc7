"""Semantic segmentation: SegFormer on CamSeq/CamVid, or any ``AutoModelForSemanticSegmentation``.

Labels. Masks are converted once, before training, into class-id PNGs (see
:mod:`recipes.formats.segmentation`). Two recipe options decide which pixels are learned from:

* ``reduce_labels`` (default ``false``): raw class 0 is a "background/unlabelled" value, mapped to
  ``ignore_index``; every other value ``v`` becomes class ``v - 1``. With index masks, ``id2label`` then
  names the classes *after* the reduction (the Hugging Face convention, e.g. ADE20k); with a palette file,
  its first class is dropped (and named in the logs and the run manifest). Class 0 is never dropped
  unless you ask for it.
* ``ignore_index`` (default 255): the label of pixels that count neither in the loss nor in the metrics:
  padding added by the augmentations, ``reduce_labels``' class 0, the classes named in ``ignore_labels``
  (e.g. CamVid's ``Void``), unknown colours and out-of-range indices. It is also written to the model
  config (``semantic_loss_ignore_index`` / ``loss_ignore_index``) so the model's loss ignores them too.

Evaluation. Images *and* masks are resized to the model's input size (masks with nearest neighbour),
so metrics are measured at that resolution. Per batch, the logits (e.g. 1/4 of the input size for
SegFormer) are upsampled bilinearly to the mask size and reduced to class ids before being gathered;
a confusion matrix accumulates them, so memory does not grow with the validation set. The
``image-segmentation`` pipeline likewise upsamples the logits to each input image's own size.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Features, Image, List, Value
from torchvision import tv_tensors
from torchvision.transforms import v2
from transformers import AutoModelForSemanticSegmentation

from recipes.config import DataArguments, RecipeError
from recipes.data import load_hub_splits, local_path, pick_splits, require_columns, undecoded
from recipes.formats import segmentation as formats
from recipes.tasks.base import StreamingMetric, Task, TaskData
from recipes.transforms import ProcessorGeometry, decode_to_tensor, normalize_batch

logger = logging.getLogger("recipes")

MASK_COLUMN = "mask"
"""Column of the converted class-id masks (PNG records) in every split."""
MASK_COLUMN_CANDIDATES = ("annotation", "label", "mask", "segmentation", "semantic_segmentation", "seg_mask")
IGNORED_COLOUR = (255, 255, 255)
"""Colour of ignored pixels in the prediction plots."""


@dataclass
class SegmentationDataArguments(DataArguments):
    """Data keys of the semantic-segmentation task."""

    dataset_format: str = field(
        default="auto",
        metadata={
            "help": "Layout of local folders: auto (detected), camvid (frames + <frame>_L.png colour masks + "
            "label_colors.txt / class_dict.csv) or index-masks (images/ + masks/, or <name>_mask.png)."
        },
    )
    mask_column_name: str | None = field(
        default=None,
        metadata={"help": f"Hub datasets: the mask column; default: the first of {', '.join(MASK_COLUMN_CANDIDATES)}."},
    )
    id2label: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Class names of index masks: a mapping {0: road, ...}, a list, a JSON string or a JSON file. "
            "Default: id2label.json in the folder or the Hub dataset repo. With reduce_labels, the names of "
            "the classes after the reduction."
        },
    )
    label_colors_file: str | None = field(
        default=None,
        metadata={
            "help": "Palette of colour masks (label_colors.txt: `R G B<TAB>Name`, or class_dict.csv: name,r,g,b). "
            "Default for camvid folders: the file in the folder or its parent."
        },
    )
    reduce_labels: bool = field(
        default=False,
        metadata={
            "help": "Treat raw class 0 as background: map it to ignore_index and shift the other classes down "
            "by one. Off by default: class 0 is never dropped unless asked."
        },
    )
    ignore_index: int = field(
        default=255,
        metadata={
            "help": "Label of pixels excluded from the loss and the metrics (padding, reduced class 0, "
            "ignore_labels, unknown colours). Must not be a class id."
        },
    )
    ignore_labels: list[str] = field(
        default_factory=list,
        metadata={"help": "Class names mapped to ignore_index, e.g. [Void] for CamVid."},
    )


# --------------------------------------------------------------------------- data


@dataclass
class SegmentationSource:
    """Raw splits (image + mask columns, not yet checked) and what their masks mean."""

    splits: dict[str, Dataset]
    mask_column: str
    class_names: list[str]
    """Names of the raw mask values 0..n-1 (palette order, or id2label with reduce_labels' background)."""
    palette: formats.Palette | None
    """Colours of colour masks; ``None`` for index masks."""
    layout: str
    ordered: bool
    """Rows are video frames in time order (hold out the last ones, never a random subset)."""
    orphan_masks: list[str] = field(default_factory=list)


def load_segmentation_source(data_args: SegmentationDataArguments, cache_dir: str | None) -> SegmentationSource:
    """Hub dataset (``dataset_name``) or local folders (``train_dir``, ``validation_dir``, ``test_dir``)."""
    if data_args.dataset_name:
        return _hub_source(data_args, cache_dir)
    train_dir = local_path(data_args.train_dir, "train_dir")
    if train_dir is None:
        raise RecipeError(
            "No data: set `dataset_name` (Hub id) or `train_dir` (a folder of "
            + " / ".join(formats.LAYOUTS.values()) + ")."
        )
    if not train_dir.is_dir():
        raise RecipeError(f"`train_dir` must be a folder, got the file {train_dir}.")
    dataset_format = formats.normalise_format(data_args.dataset_format)
    folders = {"train": train_dir}
    if formats.detect_layout(train_dir) is None:
        folders = formats.find_split_folders(train_dir) or folders
    for split, value in (("validation", data_args.validation_dir), ("test", data_args.test_dir)):
        folder = local_path(value, f"{split}_dir")
        if folder is not None:
            folders[split] = folder
    listings = {split: formats.list_folder(folder, dataset_format) for split, folder in folders.items()}
    layouts = {listing.layout for listing in listings.values()}
    if len(layouts) > 1:
        found = ", ".join(f"{split}: {listing.layout} ({listing.folder})" for split, listing in listings.items())
        raise RecipeError(f"The data folders use different layouts ({found}); convert them to one layout.")
    layout = layouts.pop()
    palette = _local_palette(data_args, listings, layout)
    if palette is not None:
        class_names = _palette_class_names(data_args, palette)
    else:
        class_names = _index_class_names(data_args, _id2label_near(train_dir))
    splits = {}
    for split, listing in listings.items():
        if not listing.images:
            raise RecipeError(f"No images found in {listing.folder} ({formats.LAYOUTS[layout]}).")
        column = data_args.image_column_name
        dataset = Dataset.from_dict({column: listing.images, "mask_file": listing.masks})
        splits[split] = dataset.cast_column(column, Image(decode=False))
    orphans = [path for listing in listings.values() for path in listing.orphan_masks]
    # Colour-mask folders are video frames (CamSeq/CamVid): hold out the last frames, a random split would leak.
    ordered = layout == formats.CAMVID
    return SegmentationSource(splits, "mask_file", class_names, palette, layout, ordered=ordered,
                              orphan_masks=orphans)


def _local_palette(
    data_args: SegmentationDataArguments, listings: dict[str, formats.FolderListing], layout: str
) -> formats.Palette | None:
    """The palette of colour masks: ``label_colors_file``, else (camvid) the file next to the train data.
    A different palette file next to another split is an error (its colours would mean other classes)."""
    if data_args.label_colors_file:
        return formats.read_palette_file(data_args.label_colors_file)
    if layout != formats.CAMVID:
        return None
    palettes = {split: formats.find_palette_file(listing.folder) for split, listing in listings.items()}
    if palettes["train"] is None:
        folder = listings["train"].folder
        raise RecipeError(
            f"{folder} holds colour masks (<frame>_L.png) but no label_colors.txt or class_dict.csv was found "
            f"in it or in {folder.parent}: add one, or set `label_colors_file`."
        )
    palette = formats.read_palette_file(palettes["train"])
    for split, path in palettes.items():
        if path is not None and path != palettes["train"]:
            other = formats.read_palette_file(path)
            if (other.names, other.colours) != (palette.names, palette.colours):
                raise RecipeError(
                    f"The {split} palette {path} differs from the train palette {palettes['train']}; the same "
                    "colour must mean the same class in every split (set `label_colors_file` to the right one)."
                )
    return palette


def _palette_class_names(data_args: SegmentationDataArguments, palette: formats.Palette) -> list[str]:
    """Colour masks are named by their palette; an ``id2label`` in the recipe is not used (said so)."""
    if data_args.id2label is not None:
        logger.warning("`id2label` is not used: the classes of colour masks come from their palette %s.",
                       palette.source)
    return list(palette.names)


def _id2label_near(folder: Path) -> Path | None:
    for where in (folder, folder.parent):
        if (where / formats.ID2LABEL_FILE_NAME).is_file():
            return where / formats.ID2LABEL_FILE_NAME
    return None


def _index_class_names(data_args: SegmentationDataArguments, found: Path | dict[int, str] | None) -> list[str]:
    """Raw class names of index masks: the recipe's ``id2label`` (else ``found``), with reduce_labels'
    background prepended (``id2label`` names the classes after the reduction)."""
    if data_args.id2label is not None:
        id2label = formats.parse_id2label(data_args.id2label)
    elif found is not None:
        id2label = found if isinstance(found, dict) else formats.parse_id2label(found)
    else:
        raise RecipeError(
            "Index masks need class names: set `id2label` in the recipe (a mapping {0: road, ...}, a list or a "
            f"JSON file), or put {formats.ID2LABEL_FILE_NAME} next to the data. For colour masks set "
            "`label_colors_file` instead."
        )
    names = [id2label[i] for i in range(len(id2label))]
    return ["<background (reduce_labels)>", *names] if data_args.reduce_labels else names


def _hub_source(data_args: SegmentationDataArguments, cache_dir: str | None) -> SegmentationSource:
    splits = load_hub_splits(data_args, cache_dir)
    train = splits[data_args.train_split] if data_args.train_split in splits else next(iter(splits.values()))
    mask_column = data_args.mask_column_name or next(
        (name for name in MASK_COLUMN_CANDIDATES if name in train.column_names), None
    )
    if mask_column is None:
        raise RecipeError(
            f"No mask column found in `{data_args.dataset_name}` (columns: {train.column_names}); set "
            "`mask_column_name` to the column holding the segmentation masks."
        )
    for split, dataset in splits.items():
        require_columns(
            dataset,
            {"image_column_name": data_args.image_column_name, "mask_column_name": mask_column},
            f"the {split} split of {data_args.dataset_name}",
        )
    splits = {
        split: undecoded(undecoded(dataset, data_args.image_column_name), mask_column)
        for split, dataset in splits.items()
    }
    palette = formats.read_palette_file(data_args.label_colors_file) if data_args.label_colors_file else None
    if palette is not None:
        class_names = _palette_class_names(data_args, palette)
    else:
        found = None if data_args.id2label is not None else formats.hub_id2label(data_args.dataset_name, cache_dir)
        class_names = _index_class_names(data_args, found)
    return SegmentationSource(splits, mask_column, class_names, palette, "hub", ordered=False)


def check_and_convert_split(
    dataset: Dataset,
    split: str,
    *,
    image_column: str,
    mask_column: str,
    mapping: formats.LabelMapping,
    palette: formats.Palette | None,
    data_args: SegmentationDataArguments,
) -> tuple[Dataset, dict[str, Any]]:
    """Check every (image, mask) pair, convert the masks to class ids and report what was found.

    Unusable pairs (missing mask, size mismatch, unreadable file) are skipped and reported, or stop a
    ``strict`` run; unknown colours / out-of-range indices become ignore pixels, counted per file
    (``strict``: an error naming the files).
    """
    features = Features({
        image_column: dataset.features[image_column],
        MASK_COLUMN: Image(decode=False),
        "problem": Value("string"),
        "invalid_pixels": Value("int64"),
        "invalid_examples": Value("string"),
        "class_pixels": List(Value("int64")),
        "ignored_pixels": Value("int64"),
    })
    converted = dataset.map(
        partial(formats.check_and_convert_batch, image_column=image_column, mask_column=mask_column,
                mapping=mapping, palette=palette, check_images=data_args.check_images),
        batched=True,
        batch_size=16,
        num_proc=data_args.preprocessing_num_workers,
        remove_columns=[c for c in dataset.column_names if c != image_column],
        features=features,
        desc=f"Checking and converting the {split} masks",
    )
    report = converted.select_columns(["problem", "invalid_pixels", "invalid_examples", "ignored_pixels"]).to_dict()
    flagged = [i for i, (reason, count) in enumerate(zip(report["problem"], report["invalid_pixels"]))
               if reason or count]
    names = {i: _record_path(record, f"{split} row {i}")  # only the flagged rows: never every image's bytes
             for i, record in zip(flagged, dataset.select(flagged)[image_column] if flagged else [])}
    bad = [(names[i], report["problem"][i]) for i in flagged if report["problem"][i]]
    invalid = [
        {"split": split, "path": names[i], "pixels": report["invalid_pixels"][i],
         "examples": report["invalid_examples"][i]}
        for i in flagged if report["invalid_pixels"][i]
    ]
    if data_args.strict and (bad or invalid):
        lines = [f"  {path}: {reason}" for path, reason in bad[:20]]
        lines += [f"  {item['path']}: {item['pixels']} pixel(s) with unknown colours / out-of-range class ids "
                  f"({item['examples']})" for item in invalid[:20]]
        raise RecipeError(
            f"{len(bad) + len(invalid)} problem(s) in the {split} split (strict mode):\n" + "\n".join(lines)
            + "\nFix these files (add missing colours to the palette, check id2label / reduce_labels), "
            "or run without `strict` to skip bad pairs and map unknown values to ignore_index."
        )
    for path, reason in bad:
        logger.warning("Skipping %s: %s", path, reason)
    if invalid:
        total = sum(item["pixels"] for item in invalid)
        listing = "; ".join(f"{Path(item['path']).name}: {item['pixels']} ({item['examples']})" for item in invalid[:5])
        logger.warning(
            "%d pixel(s) in %d %s mask(s) have unknown colours / out-of-range class ids and are ignored "
            "(ignore_index %d): %s%s. Add them to the palette or id2label (or check reduce_labels), or set "
            "`strict` to stop on them.", total, len(invalid), split, mapping.ignore_index, listing,
            " ..." if len(invalid) > 5 else "",
        )
    keep = [i for i, reason in enumerate(report["problem"]) if not reason]
    if not keep:
        raise RecipeError(f"No usable image/mask pairs in the {split} split (see the warnings above).")
    class_pixels = np.asarray(converted.select(keep)["class_pixels"], dtype=np.int64).sum(axis=0)
    ignored = int(sum(report["ignored_pixels"][i] for i in keep))
    total = int(class_pixels.sum()) + ignored
    summary = {
        f"{split}_examples": len(keep),
        f"{split}_pixel_share": {
            **{name: round(float(count) / max(total, 1), 6) for name, count in zip(mapping.id2label.values(),
                                                                                  class_pixels)},
            "(ignored)": round(ignored / max(total, 1), 6),
        },
        f"{split}_invalid_label_pixels": sum(item["pixels"] for item in invalid),
        "skipped_files": [{"split": split, "path": path, "reason": reason} for path, reason in bad],
        "invalid_label_files": invalid,
    }
    clean = converted.select(keep) if len(keep) < len(converted) else converted
    return clean.select_columns([image_column, MASK_COLUMN]), summary


def _record_path(record: Any, fallback: str) -> str:
    if isinstance(record, dict):
        return str(record.get("path") or fallback)
    return str(record)


def _log_pixel_share(share: dict[str, float]) -> None:
    ranked = sorted(share.items(), key=lambda item: -item[1])
    logger.info("Train pixel share per class: %s", ", ".join(f"{name} {value:.1%}" for name, value in ranked))
    absent = [name for name, value in share.items() if value == 0 and name != "(ignored)"]
    if absent:
        logger.info("Classes absent from the training masks: %s", ", ".join(absent))


# --------------------------------------------------------------------------- transforms


def build_train_augmentation(preset: str, height: int, width: int, mask_fill: int) -> v2.Compose:
    """Named presets applied jointly to an image and its ``tv_tensors.Mask`` (masks: nearest, padding
    ``mask_fill``): ``none`` (resize), ``basic`` (random scale 0.5-2x + crop + flip + brightness/contrast/saturation
    jitter), ``strong`` (basic + rotation, stronger jitter with hue, grey and blur)."""
    size = (height, width)
    if preset == "none":
        return build_eval_transform(height, width)
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: mask_fill}
    short_side = min(height, width)
    scale = v2.RandomResize(max(1, short_side // 2), short_side * 2, antialias=True)
    crop = v2.RandomCrop(size, pad_if_needed=True, fill=fill)
    if preset == "basic":
        return v2.Compose([scale, crop, v2.RandomHorizontalFlip(),
                           v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3)])
    if preset == "strong":
        return v2.Compose([
            scale,
            v2.RandomApply([v2.RandomRotation(10, fill=fill)], p=0.3),
            crop,
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
            v2.RandomGrayscale(p=0.1),
            v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.2),
        ])
    raise RecipeError(f"Unknown augmentation preset `{preset}` for semantic-segmentation: use none, basic or strong.")


def build_eval_transform(height: int, width: int) -> v2.Compose:
    """Resize image (bilinear) and mask (nearest) to the model's input size, as the image processor does."""
    return v2.Compose([v2.Resize((height, width), antialias=True)])


def transform_segmentation_batch(
    batch: dict[str, list], *, image_column: str, augment: Callable, stored_ignore: int, ignore_index: int
) -> dict[str, list]:
    """``with_transform`` function: decode image and class-id mask, augment them together, and
    return ``uint8`` images with ``int64`` labels (``ignore_index`` where ignored)."""
    pixel_values, labels = [], []
    for image_record, mask_record in zip(batch[image_column], batch[MASK_COLUMN]):
        image = tv_tensors.Image(decode_to_tensor(image_record))
        mask = tv_tensors.Mask(torch.from_numpy(formats.decode_class_ids(mask_record)))
        image, mask = augment(image, mask)
        label = mask.as_subclass(torch.Tensor).long()
        if stored_ignore != ignore_index:
            label[label == stored_ignore] = ignore_index
        pixel_values.append(image.as_subclass(torch.Tensor))
        labels.append(label)
    return {"pixel_values": pixel_values, "labels": labels}


def collate_segmentation(examples: list[dict[str, Any]], *, geometry: ProcessorGeometry) -> dict[str, torch.Tensor]:
    """Stack ``uint8`` images, normalise the batch at once, and stack the label masks."""
    pixels = torch.stack([example["pixel_values"] for example in examples])
    return {
        "pixel_values": normalize_batch(pixels, geometry),
        "labels": torch.stack([example["labels"] for example in examples]),
    }


UPSAMPLE_BUDGET = 2**26
"""Most logit values upsampled at once in :func:`logits_to_class_ids` (256 MiB of float32)."""


def logits_to_class_ids(logits: Any, labels: torch.Tensor) -> torch.Tensor:
    """``preprocess_logits_for_metrics``: upsample the logits (bilinear) to the label size and keep the
    arg-max class id, so only a small ``(B, H, W)`` integer tensor is gathered. Images are upsampled a
    few at a time so that ``B x C x H x W`` floats never exist at once for large label maps."""
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    size = tuple(labels.shape[-2:])
    num_classes = logits.shape[1]
    dtype = torch.uint8 if num_classes <= 256 else torch.int32
    if tuple(logits.shape[-2:]) == size:
        return logits.argmax(dim=1).to(dtype)
    chunk = max(1, UPSAMPLE_BUDGET // (num_classes * size[0] * size[1]))
    return torch.cat([
        torch.nn.functional.interpolate(part.float(), size=size, mode="bilinear", align_corners=False)
        .argmax(dim=1).to(dtype)
        for part in logits.split(chunk)
    ])


# --------------------------------------------------------------------------- metrics


def confusion_counts(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(num_classes, num_classes)`` counts of (true, predicted) pixels; labels outside
    ``0..num_classes-1`` (``ignore_index``, padding) are left out."""
    labels = labels.reshape(-1).long()
    predictions = predictions.reshape(-1).to(labels.device).long().clamp_(0, num_classes - 1)
    valid = (labels >= 0) & (labels < num_classes)
    outside = num_classes * num_classes  # one extra bin for the ignored pixels, dropped below
    pairs = torch.where(valid, labels * num_classes + predictions, outside)
    return torch.bincount(pairs, minlength=outside + 1)[:outside].reshape(num_classes, num_classes)


def segmentation_scores(confusion: np.ndarray) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """mIoU, mean (per-class) accuracy and overall pixel accuracy from a (true, predicted) confusion matrix.

    A class absent from both prediction and ground truth has no IoU and is left out of the mean (no
    NaN); mean accuracy averages the classes present in the ground truth.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    ground_truth, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    union = ground_truth + predicted - true_positive
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        accuracy = np.where(ground_truth > 0, true_positive / ground_truth, np.nan)
    total = ground_truth.sum()
    scores = {
        "mean_iou": float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0,
        "mean_accuracy": float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else 0.0,
        "overall_accuracy": float(true_positive.sum() / total) if total else 0.0,
    }
    return scores, {"iou": iou, "accuracy": accuracy, "pixels": ground_truth}


class SegmentationMetric(StreamingMetric):
    """mIoU, mean accuracy, overall accuracy and per-class IoU/accuracy from a streamed confusion matrix.

    Each gathered batch of class ids (see :func:`logits_to_class_ids`) adds its ``bincount`` to a
    ``C x C`` matrix; nothing else is kept, so memory is independent of the validation set size.
    """

    def __init__(self, id2label: dict[int, str]) -> None:
        self.id2label = id2label
        self.num_classes = len(id2label)
        self.reset()

    def update(self, predictions: Any, labels: Any) -> None:
        predictions = torch.as_tensor(predictions)
        labels = torch.as_tensor(labels, device=predictions.device)
        self.confusion += confusion_counts(predictions, labels, self.num_classes).cpu()
        self.samples += int(labels.shape[0])

    def compute(self) -> dict[str, float]:
        scores, per_class = segmentation_scores(self.confusion.numpy())
        names = [self.id2label[i] for i in range(self.num_classes)]
        self._details = {
            "per_class": {
                name: {
                    "iou": None if np.isnan(per_class["iou"][i]) else float(per_class["iou"][i]),
                    "accuracy": None if np.isnan(per_class["accuracy"][i]) else float(per_class["accuracy"][i]),
                    "pixels": int(per_class["pixels"][i]),
                }
                for i, name in enumerate(names)
            },
            "confusion_matrix": self.confusion.tolist(),
            "labels": names,
        }
        return {**scores, "samples": self.samples}

    def reset(self) -> None:
        self.confusion = torch.zeros((self.num_classes, self.num_classes), dtype=torch.int64)
        self.samples = 0


# --------------------------------------------------------------------------- task


class SemanticSegmentation(Task):
    """Fine-tune any ``AutoModelForSemanticSegmentation`` (SegFormer, UperNet, DPT, ...) on masks."""

    name = "semantic-segmentation"
    pipeline_tag = "image-segmentation"
    data_arguments_class = SegmentationDataArguments
    auto_model_class = AutoModelForSemanticSegmentation
    main_metric = "mean_iou"
    card_metrics = {"mean_iou": "Mean IoU", "mean_accuracy": "Mean accuracy", "overall_accuracy": "Pixel accuracy"}

    def load_data(self, data_args: SegmentationDataArguments, seed: int, cache_dir: str | None = None) -> TaskData:
        source = load_segmentation_source(data_args, cache_dir)
        mapping = formats.build_label_mapping(
            source.class_names,
            reduce_labels=data_args.reduce_labels,
            ignore_labels=data_args.ignore_labels,
            ignore_index=data_args.ignore_index,
            raw_ignore_value=data_args.ignore_index if source.palette is None and data_args.ignore_index >= 0 else None,
        )
        if mapping.dropped:
            logger.info("Mapped to ignore_index %d (reduce_labels / ignore_labels): %s", data_args.ignore_index,
                        ", ".join(mapping.dropped))
        train, validation, test = pick_splits(source.splits, data_args, seed, ordered_holdout=source.ordered)
        summary: dict[str, Any] = {
            "layout": source.layout,
            "mask_encoding": "colour" if source.palette is not None else "index",
            "palette_file": source.palette.source if source.palette is not None else None,
            "reduce_labels": data_args.reduce_labels,
            "ignore_index": data_args.ignore_index,
            "ignored_classes": list(mapping.dropped),
            "skipped_files": [],
            "invalid_label_files": [],
            "orphan_masks": source.orphan_masks,
        }
        if source.orphan_masks:
            logger.warning("%d mask(s) have no image and are not used, e.g. %s", len(source.orphan_masks),
                           source.orphan_masks[0])
        checked: dict[str, Dataset] = {}
        for split, dataset in (("train", train), ("validation", validation), ("test", test)):
            if dataset is None:
                continue
            checked[split], report = check_and_convert_split(
                dataset, split, image_column=data_args.image_column_name, mask_column=source.mask_column,
                mapping=mapping, palette=source.palette, data_args=data_args,
            )
            for key in ("skipped_files", "invalid_label_files"):
                summary[key] += report.pop(key)
            summary.update(report)
        _log_pixel_share(summary["train_pixel_share"])
        return TaskData(
            train=checked["train"],
            validation=checked["validation"],
            test=checked.get("test"),
            id2label=mapping.id2label,
            dataset_id=data_args.dataset_name,
            summary=summary,
            extras={
                "palette": _training_palette(source.palette, mapping),
                "ignore_index": data_args.ignore_index,
                "stored_ignore": mapping.stored_ignore,
            },
        )

    def transforms(self, image_processor: Any, data_args: SegmentationDataArguments, data: TaskData):
        geometry = ProcessorGeometry.from_processor(image_processor)
        common = {
            "image_column": data_args.image_column_name,
            "stored_ignore": data.extras["stored_ignore"],
            "ignore_index": data.extras["ignore_index"],
        }
        train_augment = build_train_augmentation(
            data_args.augmentation, geometry.height, geometry.width, mask_fill=data.extras["stored_ignore"]
        )
        eval_augment = build_eval_transform(geometry.height, geometry.width)
        return (
            partial(transform_segmentation_batch, augment=train_augment, **common),
            partial(transform_segmentation_batch, augment=eval_augment, **common),
        )

    def collator(self, image_processor: Any, data: TaskData):
        return partial(collate_segmentation, geometry=ProcessorGeometry.from_processor(image_processor))

    def metric(self, data: TaskData, image_processor: Any) -> StreamingMetric:
        return SegmentationMetric(data.id2label)

    def preprocess_logits_for_metrics(self, image_processor: Any) -> Callable | None:
        return logits_to_class_ids

    def model_kwargs(self, data: TaskData) -> dict[str, Any]:
        # Segmentation configs name their loss's ignore label either way (SegFormer, DPT, BEiT,
        # MobileViT: semantic_loss_ignore_index; UperNet: loss_ignore_index); the other one is inert.
        ignore_index = data.extras["ignore_index"]
        return {"semantic_loss_ignore_index": ignore_index, "loss_ignore_index": ignore_index}

    def image_processor_kwargs(self, data_args: SegmentationDataArguments) -> dict[str, Any]:
        # Recorded in preprocessor_config.json so the saved processor treats masks as training did.
        return {"do_reduce_labels": data_args.reduce_labels}

    def make_plots(self, context: Any, output_dir: Path) -> dict[str, Path]:
        from recipes import plots

        written = {}
        per_class = context.eval_details.get("per_class") or {}
        ious = {name: values["iou"] for name, values in per_class.items() if values["iou"] is not None}
        if ious:
            written["per_class_iou"] = plots.bar_chart(
                ious, output_dir / "per_class_iou.png", title="Validation IoU per class", xlabel="IoU"
            )
        grid = prediction_grid(context, output_dir / "predictions.png")
        if grid is not None:
            written["predictions"] = grid
        # The class colours travel with the model (the demo app and users colour predictions with them).
        palette = {str(index): list(colour) for index, colour in context.data.extras["palette"].items()}
        (output_dir / "palette.json").write_text(json.dumps(palette, indent=1))
        return written

    def card_sections(self, context: Any) -> list[tuple[str, str]]:
        sections = []
        per_class = context.eval_details.get("per_class")
        share = context.data.summary.get("train_pixel_share", {})
        if per_class:
            rows = ["| Class | IoU | Accuracy | Validation pixels | Train pixel share |", "|---|---|---|---|---|"]
            for name, values in per_class.items():
                rows.append(
                    f"| {name} | {_fmt(values['iou'])} | {_fmt(values['accuracy'])} | {values['pixels']} "
                    f"| {share.get(name, 0.0):.2%} |"
                )
            note = ("\n\n— : class absent from both the predictions and the validation masks (left out of the "
                    "mean IoU).")
            sections.append(("Per-class results (validation)", "\n".join(rows) + note))
        palette = context.data.extras.get("palette") or {}
        if palette:
            rows = ["| Id | Class | Colour | RGB | Hex |", "|---|---|---|---|---|"]
            for index, name in context.data.id2label.items():
                colour = palette[index]
                code = formats.hex_colour(colour)
                rows.append(f'| {index} | {name} | <span style="color:{code}">███</span> | '
                            f"{tuple(colour)} | `{code}` |")
            sections.append(("Palette", "\n".join(rows)))
        sections.append(("Labels and evaluation", _labels_note(context)))
        return sections

    def usage_snippet(self, model_id: str) -> str:
        return (
            "from transformers import pipeline\n\n"
            f'segmenter = pipeline("image-segmentation", model="{model_id}")\n'
            'for segment in segmenter("path/to/street.png"):  # one entry per class found in the image\n'
            '    print(segment["label"], segment["mask"].size)  # mask: PIL image at the input\'s size'
        )


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _labels_note(context: Any) -> str:
    summary, extras = context.data.summary, context.data.extras
    ignored = ", ".join(summary.get("ignored_classes") or []) or "none"
    geometry = ProcessorGeometry.from_processor(context.image_processor)
    return (
        f"- Masks: {summary.get('mask_encoding', '?')} masks ({summary.get('layout', '?')} layout).\n"
        f"- `reduce_labels`: {summary.get('reduce_labels')}; classes mapped to `ignore_index` "
        f"({extras.get('ignore_index')}): {ignored}. Ignored pixels count neither in the loss nor in the metrics.\n"
        f"- Evaluation: images and masks resized to {geometry.height}x{geometry.width} (masks with nearest "
        "neighbour); logits upsampled bilinearly to that size; mIoU averages the classes present in the "
        "predictions or the masks. The pipeline returns masks at each input image's own size."
    )


def _training_palette(palette: formats.Palette | None, mapping: formats.LabelMapping) -> dict[int, tuple[int, ...]]:
    """Class id → RGB for plots and the card: the mask colours, or generated ones for index masks."""
    if palette is None:
        generated = formats.default_palette(list(mapping.id2label.values()))
        return {index: tuple(colour) for index, colour in enumerate(generated.colours)}
    by_name = dict(zip(palette.names, palette.colours))
    return {index: tuple(by_name[name]) for index, name in mapping.id2label.items()}


def colourise(class_ids: np.ndarray, palette: dict[int, tuple[int, ...]]) -> np.ndarray:
    """Class-id mask → ``(H, W, 3)`` ``uint8`` image; ignored / unknown ids in :data:`IGNORED_COLOUR`."""
    table = np.array([palette[i] for i in range(len(palette))] + [IGNORED_COLOUR], dtype=np.uint8)
    ids = np.where((class_ids >= 0) & (class_ids < len(palette)), class_ids, len(palette))
    return table[ids]


def prediction_grid(context: Any, path: Path) -> Path | None:
    """Validation image | prediction | ground truth rows, coloured with the dataset's palette."""
    from recipes import plots

    dataset = context.eval_dataset
    if dataset is None or len(dataset) == 0:
        return None
    rows = min(len(dataset), max(1, context.recipe.run.max_plot_images // 3))
    model = context.trainer.model.eval()
    device = next(model.parameters()).device
    examples = [dataset[i] for i in range(rows)]
    batch = context.trainer.data_collator(examples)
    with torch.no_grad():
        logits = model(pixel_values=batch["pixel_values"].to(device)).logits
    predicted = logits_to_class_ids(logits.float().cpu(), batch["labels"]).long().numpy()
    palette = context.data.extras["palette"]
    images, titles = [], []
    for example, prediction in zip(examples, predicted):
        images += [
            example["pixel_values"].permute(1, 2, 0).numpy(),
            colourise(prediction, palette),
            colourise(example["labels"].numpy(), palette),
        ]
        titles += ["image", "prediction", "ground truth (white: ignored)"]
    return plots.image_grid(images, titles, path, columns=3, suptitle="Validation predictions")
