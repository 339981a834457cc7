"""Semantic segmentation from a stream: class names known up front, each training (image, mask) pair checked and
its mask converted to class ids as it is read; the evaluation splits
(:func:`recipes.data.streaming.splits.stream_splits`) are local folders or taken from the stream, and checked and
converted like map-style splits.

Masks are index masks (class id per pixel: ``L``/``P``/``I;16`` PNGs), named by ``id2label`` (the recipe's, else
``id2label.json`` in the Hub dataset repo or next to the local shards), or colour masks with ``label_colors_file``
(converted per record through the palette, as the map-style path does). ``reduce_labels``, ``ignore_labels`` and
``ignore_index`` mean what they mean there. webdataset shards hold ``KEY.jpg`` + ``KEY.mask.png``
(``image_column_name: jpg``, ``mask_column_name: mask.png``). A pair is skipped and listed (``strict``: the run
stops there) when the image or the mask cannot be read, their sizes differ, the mask is not of the configured kind,
or it has pixels of no class (unknown colours, ids out of range other than ``ignore_index``): the map-style path
maps such pixels to ``ignore_index`` after listing them before training, which a stream cannot do.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from datasets import Dataset, Image, IterableDataset

from recipes.config import RecipeError
from recipes.data.check_cache import CheckCache
from recipes.data.streaming.sources import shard_files
from recipes.data.streaming.splits import stream_splits, training_stream
from recipes.tasks.segmentation import formats
from recipes.tasks.segmentation.data import (
    MASK_COLUMN,
    MASK_COLUMN_CANDIDATES,
    SegmentationData,
    SegmentationDataArguments,
    SegmentationSource,
    check_and_convert_split,
    id2label_near,
    index_class_names,
    label_mapping,
    palette_class_names,
)
from recipes.tasks.segmentation.masks import check_and_convert_one
from recipes.tasks.segmentation.report import training_palette

logger = logging.getLogger("recipes")


def stream_mask_column(stream: IterableDataset, data_args: SegmentationDataArguments) -> str:
    """``mask_column_name``, else the first usual mask column name of the stream."""
    if data_args.mask_column_name:
        return data_args.mask_column_name
    found = next((name for name in MASK_COLUMN_CANDIDATES if name in (stream.column_names or ())), None)
    if found is None:
        raise RecipeError(
            f"No mask column found in the stream (columns: {stream.column_names}); set `mask_column_name` to the "
            "column holding the segmentation masks."
        )
    return found


def _shard_folder(data_args: SegmentationDataArguments) -> Path | None:
    option = "train_file" if data_args.train_file else "train_dir"
    files = shard_files(getattr(data_args, option), option)
    return Path(files[0]).parent if files else None


def stream_class_names(data_args: SegmentationDataArguments, cache_dir: str | None) -> tuple[list[str], Any]:
    """``(raw class names, palette or None)``: the palette's names (``label_colors_file``), else ``id2label`` (the
    recipe's, the Hub dataset repo's ``id2label.json``, or the one next to the local shards)."""
    if data_args.label_colors_file:
        palette = formats.read_palette_file(data_args.label_colors_file)
        return palette_class_names(data_args, palette), palette
    found = None
    if data_args.id2label is None:
        if data_args.dataset_name:
            found = formats.hub_id2label(data_args.dataset_name, cache_dir)
        else:
            folder = _shard_folder(data_args)
            found = id2label_near(folder) if folder is not None else None
    return index_class_names(data_args, found), None


def check_stream_pair(
    record: dict[str, Any], *, image_column: str, mask_column: str, mapping: formats.LabelMapping,
    palette: formats.Palette | None,
) -> str | None:
    """Why a streamed (image, mask) pair is unusable, or None after putting its class-id mask (PNG bytes) in
    the record's ``mask`` column, which the training transform reads."""
    result = check_and_convert_one(record.get(image_column), record.get(mask_column), mapping=mapping,
                                   palette=palette, check_images=False)
    if result["problem"]:
        return result["problem"]
    if result["invalid_pixels"]:
        kind = "unknown colours" if palette is not None else "values that are no class id nor ignore_index"
        return (f"the mask has {result['invalid_pixels']} pixel(s) with {kind} ({result['invalid_examples']}): fix "
                "the mask, or check id2label / reduce_labels / label_colors_file")
    record[MASK_COLUMN] = result["mask"]
    return None


def _folder_split(split: str, folder: Path, data_args: SegmentationDataArguments, mask_column: str) -> Dataset:
    """A local evaluation folder (index masks, or colour masks with ``label_colors_file``)."""
    listing = formats.list_folder(folder, formats.normalise_format(data_args.dataset_format))
    if not listing.images:
        raise RecipeError(f"No images found in {folder} (`{split}_dir`).")
    dataset = Dataset.from_dict({data_args.image_column_name: listing.images, mask_column: listing.masks})
    return dataset.cast_column(data_args.image_column_name, Image(decode=False))


def load_streaming_segmentation(
    data_args: SegmentationDataArguments, seed: int, cache_dir: str | None = None
) -> SegmentationData:
    """Streamed training split (undecoded, checked and converted per record as it is read) and checked,
    converted map-style evaluation splits."""
    image_column = data_args.image_column_name
    streams, train_name = training_stream(data_args, {"image_column_name": image_column}, cache_dir)
    mask_column = stream_mask_column(streams[train_name], data_args)
    names = streams[train_name].column_names
    if names is not None and mask_column not in names:
        raise RecipeError(f"Column `{mask_column}` (set by `mask_column_name`) not found in the stream. Available "
                          f"columns: {names}. Set `--mask_column_name` to one of them.")
    class_names, palette = stream_class_names(data_args, cache_dir)
    source = SegmentationSource({}, mask_column, class_names, palette, "stream", ordered=False)
    mapping = label_mapping(source, data_args)
    splits = stream_splits(streams, train_name, data_args, file_columns=[image_column, mask_column],
                           read_folder=partial(_folder_split, data_args=data_args, mask_column=mask_column))
    summary: dict[str, Any] = {
        **splits.summary,
        "layout": "stream",
        "mask_encoding": "colour" if palette is not None else "index",
        "palette_file": palette.source if palette is not None else None,
        "reduce_labels": data_args.reduce_labels,
        "ignore_index": data_args.ignore_index,
        "ignored_classes": list(mapping.dropped),
        "invalid_label_files": [],
    }
    checked: dict[str, Dataset] = {}
    cache = CheckCache.from_args(data_args, cache_dir)
    for split, dataset in (("validation", splits.validation), ("test", splits.test)):
        if dataset is None:
            continue
        checked[split], report = check_and_convert_split(
            dataset, split, image_column=image_column, mask_column=mask_column, mapping=mapping, palette=palette,
            data_args=data_args, cache=cache,
        )
        for key in ("skipped_files", "invalid_label_files"):
            summary[key] += report.pop(key)
        summary.update(report)
    summary["check_cache"] = cache.summary()
    return SegmentationData(
        train=splits.train, validation=checked["validation"], test=checked.get("test"), id2label=mapping.id2label,
        dataset_id=data_args.dataset_name, summary=summary, palette=training_palette(palette, mapping),
        ignore_index=data_args.ignore_index, stored_ignore=mapping.stored_ignore,
        stream_check=partial(check_stream_pair, image_column=image_column, mask_column=mask_column, mapping=mapping,
                             palette=palette),
    )
