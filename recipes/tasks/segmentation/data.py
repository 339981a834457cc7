"""Semantic-segmentation data: load (local folders or the Hub), check and convert masks, split."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, Image, List, Value

from recipes.config import DataArguments, RecipeError
from recipes.data.check_cache import CheckCache, column_values
from recipes.data.sources import load_hub_splits, local_path, require_columns, undecoded
from recipes.decode.images import record_path
from recipes.tasks.base import TaskData
from recipes.tasks.segmentation import formats, masks

logger = logging.getLogger("recipes")

MASK_COLUMN = "mask"
"""Column of the converted class-id masks (PNG records) in every split."""
MASK_COLUMN_CANDIDATES = ("annotation", "label", "mask", "segmentation", "semantic_segmentation", "seg_mask")
IGNORED_COLOUR = (255, 255, 255)
"""Colour of ignored pixels in the prediction plots."""


@dataclass
class SegmentationData(TaskData):
    """:class:`TaskData` plus what segmentation's transforms, plots and card need about the labels."""

    palette: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """Class id → RGB colour (the masks' palette, or generated colours for index masks)."""
    ignore_index: int = 255
    """Label of ignored pixels in the model inputs, the loss and the metrics."""
    stored_ignore: int = 255
    """Value of ignored pixels in the converted class-id PNGs."""
    label_lookup: tuple[int, ...] | None = None
    """Stored class id → model class id, when evaluation translates the data's ids to a checkpoint's."""
    stream_check: Any = None
    """Streamed runs: the check + conversion of each training (image, mask) record (``Task.stream_check``)."""


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
        class_names = palette_class_names(data_args, palette)
    else:
        class_names = index_class_names(data_args, id2label_near(train_dir))
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


def palette_class_names(data_args: SegmentationDataArguments, palette: formats.Palette) -> list[str]:
    """Colour masks are named by their palette; an ``id2label`` in the recipe is not used (said so)."""
    if data_args.id2label is not None:
        logger.warning("`id2label` is not used: the classes of colour masks come from their palette %s.",
                       palette.source)
    return list(palette.names)


def id2label_near(folder: Path) -> Path | None:
    for where in (folder, folder.parent):
        if (where / formats.ID2LABEL_FILE_NAME).is_file():
            return where / formats.ID2LABEL_FILE_NAME
    return None


def index_class_names(data_args: SegmentationDataArguments, found: Path | dict[int, str] | None) -> list[str]:
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
        class_names = palette_class_names(data_args, palette)
    else:
        found = None if data_args.id2label is not None else formats.hub_id2label(data_args.dataset_name, cache_dir)
        class_names = index_class_names(data_args, found)
    return SegmentationSource(splits, mask_column, class_names, palette, "hub", ordered=False)


def label_mapping(source: SegmentationSource, data_args: SegmentationDataArguments) -> formats.LabelMapping:
    """How the source's raw mask values become training class ids (``reduce_labels``, ``ignore_labels``)."""
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
    return mapping


def check_and_convert_split(
    dataset: Dataset,
    split: str,
    *,
    image_column: str,
    mask_column: str,
    mapping: formats.LabelMapping,
    palette: formats.Palette | None,
    data_args: SegmentationDataArguments,
    cache: CheckCache | None = None,
) -> tuple[Dataset, dict[str, Any]]:
    """Check every (image, mask) pair, convert the masks to class ids and report what was found.

    Unusable pairs (missing mask, size mismatch, unreadable file) are skipped and reported, or stop a
    ``strict`` run; unknown colours / out-of-range indices become ignore pixels, counted per file
    (``strict``: an error naming the files). The pass is cached by ``cache`` (see :mod:`recipes.data.check_cache`).
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
    cache = cache or CheckCache.from_args(data_args)
    converted = cache.map(
        dataset,
        partial(masks.check_and_convert_batch, image_column=image_column, mask_column=mask_column,
                mapping=mapping, palette=palette, check_images=data_args.check_images),
        check="masks",
        split=split,
        desc=f"Checking and converting the {split} masks",
        file_columns=[image_column, mask_column],
        modules=["recipes.tasks.segmentation.formats"],
        batched=True,
        batch_size=16,
        remove_columns=[c for c in dataset.column_names if c != image_column],
        features=features,
    )
    report = converted.select_columns(["problem", "invalid_pixels", "invalid_examples", "ignored_pixels"]).to_dict()
    flagged = [i for i, (reason, count) in enumerate(zip(report["problem"], report["invalid_pixels"]))
               if reason or count]
    names = {i: record_path(record, f"{split} row {i}")  # only the flagged rows: never every image's bytes
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
    class_pixels = np.asarray(column_values(converted.select(keep), "class_pixels"), dtype=np.int64).sum(axis=0)
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


def log_pixel_share(share: dict[str, float]) -> None:
    ranked = sorted(share.items(), key=lambda item: -item[1])
    logger.info("Train pixel share per class: %s", ", ".join(f"{name} {value:.1%}" for name, value in ranked))
    absent = [name for name, value in share.items() if value == 0 and name != "(ignored)"]
    if absent:
        logger.info("Classes absent from the training masks: %s", ", ".join(absent))


