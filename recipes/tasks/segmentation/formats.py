"""Semantic-segmentation data on disk and on the Hub: palettes, folder layouts, mask conversion.

Supported sources (see :data:`LAYOUTS`):

* ``camvid`` (alias ``camseq``): frames ``<frame>.png`` with RGB colour masks ``<frame>_L.png`` (next to
  them, or in a sibling ``<folder>_labels/``) and a palette file, ``label_colors.txt`` (``R G B<TAB>Name``,
  CRLF line endings and one or two tabs allowed) or ``class_dict.csv`` (``name,r,g,b``, stray spaces
  allowed), in the folder or its parent.
* ``index-masks``: ``images/`` + ``masks/`` (or ``annotations/``, ``labels/``) with matching file stems,
  or ``<name>.jpg`` + ``<name>_mask.png`` side by side; each mask pixel is a class index. Class names come
  from the recipe's ``id2label`` or an ``id2label.json`` in the folder (or its parent).
* Hub / ``datasets`` datasets with an image column and an annotation column (index masks, or colour
  masks with ``label_colors_file``); class names from the recipe or the dataset repo's ``id2label.json``.

Every mask is converted **once** into a single-channel PNG of training class ids (8-bit, or 16-bit for
more than 255 classes) whose "ignore" pixels hold :func:`stored_ignore_value`; the conversion is
vectorised (RGB packed into one integer, looked up with ``np.searchsorted``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recipes.config import RecipeError
from recipes.data.splits import SPLIT_ALIASES
from recipes.decode.images import IMAGE_EXTENSIONS

logger = logging.getLogger("recipes")

Colour = tuple[int, int, int]

CAMVID = "camvid"
INDEX_MASKS = "index-masks"
LAYOUTS = {
    CAMVID: "frames with RGB colour masks named <frame>_L.png and a label_colors.txt or class_dict.csv palette",
    INDEX_MASKS: "images/ + masks/ folders with matching file stems, or <name>.jpg next to <name>_mask.png",
}
FORMAT_ALIASES = {"camseq": CAMVID, "colour-masks": CAMVID, "color-masks": CAMVID, "index": INDEX_MASKS,
                  "masks": INDEX_MASKS}
COLOUR_MASK_SUFFIX = "_L"
INDEX_MASK_SUFFIX = "_mask"
MASK_FOLDER_NAMES = ("masks", "annotations", "labels")
PALETTE_FILE_NAMES = ("label_colors.txt", "class_dict.csv")
ID2LABEL_FILE_NAME = "id2label.json"
INDEX_MASK_MODES = ("L", "P", "I;16", "I;16L", "I;16B", "I", "1")


# --------------------------------------------------------------------------- palettes


@dataclass(frozen=True)
class Palette:
    """Class names and their mask colours, in class-index order."""

    names: tuple[str, ...]
    colours: tuple[Colour, ...]
    source: str

    def colour_array(self) -> np.ndarray:
        """``(num_classes, 3)`` ``uint8`` colours."""
        return np.asarray(self.colours, dtype=np.uint8).reshape(-1, 3)


def _palette(entries: list[tuple[str, Colour, int]], path: Path) -> Palette:
    """Validate ``(name, colour, line)`` entries: at least one, colours in 0..255, no duplicates."""
    if not entries:
        raise RecipeError(f"Palette file {path} lists no classes: expected lines such as `128 64 128<TAB>Road`.")
    seen_colours: dict[Colour, str] = {}
    seen_names: set[str] = set()
    for name, colour, line in entries:
        if any(not 0 <= value <= 255 for value in colour):
            raise RecipeError(f"{path}, line {line}: colour {colour} of `{name}` is outside 0..255.")
        if colour in seen_colours:
            raise RecipeError(
                f"{path}, line {line}: colour {colour} is used by both `{seen_colours[colour]}` and `{name}`; "
                "each class needs its own colour."
            )
        if name in seen_names:
            raise RecipeError(f"{path}, line {line}: class `{name}` is listed twice.")
        seen_colours[colour] = name
        seen_names.add(name)
    return Palette(tuple(e[0] for e in entries), tuple(e[1] for e in entries), str(path))


def read_label_colors(path: Path) -> Palette:
    """Read a CamSeq/CamVid ``label_colors.txt``: ``R G B<TAB>Name`` per line (CRLF, one or two tabs)."""
    entries = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            colour = (int(fields[0]), int(fields[1]), int(fields[2]))
        except (ValueError, IndexError):
            colour = None
        if colour is None or len(fields) < 4:
            raise RecipeError(
                f"{path}, line {line_number}: cannot read {line.strip()!r}; expected `R G B<TAB>ClassName`, "
                "e.g. `128 64 128\tRoad`."
            )
        entries.append((" ".join(fields[3:]), colour, line_number))
    return _palette(entries, path)


def read_class_dict(path: Path) -> Palette:
    """Read a Kaggle-CamVid ``class_dict.csv``: a ``name,r,g,b`` header, then one class per row."""
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    header = [cell.strip().lower() for cell in rows[0]] if rows else []
    if not {"name", "r", "g", "b"} <= set(header):
        raise RecipeError(f"{path} must start with the header `name,r,g,b`, found {rows[0] if rows else 'nothing'}.")
    columns = [header.index(key) for key in ("name", "r", "g", "b")]
    entries = []
    for line_number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            name, red, green, blue = (row[i].strip() for i in columns)
            entries.append((name, (int(red), int(green), int(blue)), line_number))
        except (ValueError, IndexError) as err:
            raise RecipeError(f"{path}, line {line_number}: cannot read {row}; expected `name,r,g,b`.") from err
    return _palette(entries, path)


def read_palette_file(path: str | Path) -> Palette:
    """Read ``label_colors.txt`` or ``class_dict.csv`` (chosen by the file extension)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RecipeError(f"Palette file {path} does not exist (label_colors_file).")
    return read_class_dict(path) if path.suffix.lower() == ".csv" else read_label_colors(path)


def find_palette_file(folder: Path) -> Path | None:
    """``label_colors.txt`` or ``class_dict.csv`` in ``folder``, else in its parent."""
    for where in (folder, folder.parent):
        for name in PALETTE_FILE_NAMES:
            if (where / name).is_file():
                return where / name
    return None


def default_palette(names: Sequence[str]) -> Palette:
    """Distinct, deterministic colours for datasets without a palette (golden-ratio hue steps)."""
    import colorsys

    colours = []
    for index in range(len(names)):
        hue = (index * 0.618033988749895) % 1.0
        lightness = 0.45 + 0.15 * ((index // 7) % 2)
        red, green, blue = colorsys.hls_to_rgb(hue, lightness, 0.75)
        colours.append((round(red * 255), round(green * 255), round(blue * 255)))
    return Palette(tuple(names), tuple(colours), "generated")


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """Pack ``(..., 3)`` ``uint8`` colours into one ``uint32`` per pixel (``R | G << 8 | B << 16``)."""
    padded = np.zeros((*rgb.shape[:-1], 4), dtype=np.uint8)
    padded[..., :3] = rgb
    return padded.view("<u4")[..., 0]


def unpack_rgb(packed: int) -> Colour:
    """Inverse of :func:`pack_rgb` for one value."""
    return (packed & 255, (packed >> 8) & 255, (packed >> 16) & 255)


def colours_to_indices(rgb: np.ndarray, palette: Palette) -> tuple[np.ndarray, np.ndarray]:
    """Class index of every pixel of an ``(H, W, 3)`` colour mask (vectorised, no per-pixel loop).

    Returns ``(indices, packed)``: ``int64`` indices with ``-1`` for colours not in the palette, and
    the packed colours (to report the unknown ones).
    """
    keys = pack_rgb(palette.colour_array())
    order = np.argsort(keys)
    sorted_keys = keys[order]
    packed = pack_rgb(rgb)
    position = np.searchsorted(sorted_keys, packed)
    np.minimum(position, len(sorted_keys) - 1, out=position)
    indices = order.take(position)
    indices[sorted_keys.take(position) != packed] = -1
    return indices, packed


def hex_colour(colour: Sequence[int]) -> str:
    """``(128, 64, 128)`` → ``#804080``."""
    return "#" + "".join(f"{int(v):02x}" for v in colour[:3])


# --------------------------------------------------------------------------- class names


def parse_id2label(value: Any, where: str = "id2label") -> dict[int, str]:
    """Class names from a mapping ``{id: name}``, a list of names, a JSON string or a JSON file path.

    Ids must be 0..n-1 without gaps (the model's output channels).
    """
    if isinstance(value, (str, Path)):
        text = str(value).strip()
        path = Path(text).expanduser()
        if not text.startswith(("{", "[")):
            if not path.is_file():
                raise RecipeError(f"`{where}` points to {path}, which does not exist (expected a JSON file).")
            where, text = str(path), path.read_text(encoding="utf-8-sig")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise RecipeError(f"{where} is not valid JSON: {err}") from err
    if isinstance(value, (list, tuple)):
        value = dict(enumerate(value))
    if not isinstance(value, Mapping) or not value:
        raise RecipeError(f"{where} must map class ids to names, e.g. {{0: road, 1: sky}}; got {value!r}.")
    try:
        id2label = {int(key): str(name) for key, name in value.items()}
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{where}: class ids must be integers, got {list(value)[:5]}.") from err
    if sorted(id2label) != list(range(len(id2label))):
        raise RecipeError(f"{where}: class ids must be 0..{len(id2label) - 1} without gaps, got {sorted(id2label)}.")
    if len(set(id2label.values())) != len(id2label):
        raise RecipeError(f"{where}: class names must be unique.")
    return dict(sorted(id2label.items()))


def hub_id2label(dataset_name: str, cache_dir: str | None = None) -> dict[int, str]:
    """``id2label.json`` of a Hub dataset repo (or of a local dataset folder)."""
    local = Path(dataset_name).expanduser()
    if local.is_dir():
        path = local / ID2LABEL_FILE_NAME
        if not path.is_file():
            raise RecipeError(
                f"No class names for {local}: add {ID2LABEL_FILE_NAME} there or set `id2label` in the recipe."
            )
        return parse_id2label(path)
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(dataset_name, ID2LABEL_FILE_NAME, repo_type="dataset", cache_dir=cache_dir)
    except Exception as err:  # not found, offline, gated...: the user needs the fix, not the type
        reason = " ".join(str(err).split())
        raise RecipeError(
            f"Could not read {ID2LABEL_FILE_NAME} from the dataset repo `{dataset_name}` "
            f"({type(err).__name__}: {reason}). Set `id2label` in the recipe (a mapping, a list or a JSON file)."
        ) from err
    return parse_id2label(Path(path))


# --------------------------------------------------------------------------- label mapping


def stored_ignore_value(num_classes: int) -> int:
    """Pixel value of "ignore" in converted masks: 255 in 8-bit masks, 65535 in 16-bit ones."""
    return 255 if num_classes <= 255 else 65535


@dataclass(frozen=True)
class LabelMapping:
    """How raw mask values (palette indices or index-mask values) become training class ids."""

    target_of_source: tuple[int, ...]
    """Raw class value → training class id, ``-1`` for ignored classes."""
    id2label: dict[int, str]
    ignore_index: int
    raw_ignore_value: int | None
    """A raw index-mask value that already means "ignore" (the recipe's ``ignore_index``)."""
    dropped: tuple[str, ...] = ()
    """Raw classes mapped to ignore (``reduce_labels`` / ``ignore_labels``), for the reports."""

    @property
    def num_classes(self) -> int:
        return len(self.id2label)

    @property
    def stored_ignore(self) -> int:
        return stored_ignore_value(self.num_classes)

    def lookup_table(self) -> np.ndarray:
        """``target_of_source`` with ignored classes set to :attr:`stored_ignore`."""
        table = np.asarray(self.target_of_source, dtype=np.int64)
        return np.where(table < 0, self.stored_ignore, table)


def build_label_mapping(
    source_names: Sequence[str],
    *,
    reduce_labels: bool,
    ignore_labels: Sequence[str],
    ignore_index: int,
    raw_ignore_value: int | None,
) -> LabelMapping:
    """Drop raw class 0 (``reduce_labels``) and the classes named in ``ignore_labels``; number the rest."""
    unknown = [name for name in ignore_labels if name not in source_names]
    if unknown:  # e.g. a recipe's [Void] on data without that class: nothing to ignore
        logger.warning("`ignore_labels` %s are not classes of this data (classes: %s); ignoring them.", unknown,
                       list(source_names))
    targets, id2label, dropped = [], {}, []
    for raw, name in enumerate(source_names):
        if (reduce_labels and raw == 0) or name in ignore_labels:
            targets.append(-1)
            dropped.append(name)
        else:
            targets.append(len(id2label))
            id2label[len(id2label)] = name
    if not id2label:
        raise RecipeError("No classes left after `reduce_labels` / `ignore_labels`.")
    if 0 <= ignore_index < len(id2label):
        raise RecipeError(
            f"ignore_index {ignore_index} is the id of class `{id2label[ignore_index]}`; pick a value outside "
            f"0..{len(id2label) - 1} (255, the default, or -100)."
        )
    return LabelMapping(tuple(targets), id2label, ignore_index, raw_ignore_value, tuple(dropped))


# --------------------------------------------------------------------------- folder layouts


def normalise_format(name: str | None) -> str | None:
    """``auto``/``None`` → ``None``; aliases → the canonical layout name; unknown → clear error."""
    if name is None or name == "auto":
        return None
    name = FORMAT_ALIASES.get(name, name)
    if name not in LAYOUTS:
        choices = ", ".join(["auto", *LAYOUTS, *FORMAT_ALIASES])
        raise RecipeError(f"Unknown dataset_format `{name}` for semantic-segmentation; choose one of: {choices}.")
    return name


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _mask_folder(folder: Path) -> Path | None:
    return next((folder / name for name in MASK_FOLDER_NAMES if (folder / name).is_dir()), None)


def _colour_mask_folder(folder: Path) -> Path:
    """Where ``_L.png`` masks live: next to the frames, or in a Kaggle-style sibling ``<folder>_labels``."""
    sibling = folder.parent / f"{folder.name}_labels"
    if sibling.is_dir() and not any(p.stem.endswith(COLOUR_MASK_SUFFIX) for p in _image_files(folder)):
        return sibling
    return folder


def detect_layout(folder: Path) -> str | None:
    """The layout of ``folder`` (``camvid`` or ``index-masks``), or ``None`` when it is neither."""
    if (folder / "images").is_dir() and _mask_folder(folder) is not None:
        return INDEX_MASKS
    if any(p.stem.endswith(COLOUR_MASK_SUFFIX) for p in _image_files(_colour_mask_folder(folder))):
        return CAMVID
    if any(p.stem.endswith(INDEX_MASK_SUFFIX) for p in _image_files(folder)):
        return INDEX_MASKS
    return None


def _what_is_there(folder: Path) -> str:
    files = _image_files(folder)
    folders = sorted(p.name for p in folder.iterdir() if p.is_dir())
    shown = ", ".join(p.name for p in files[:3]) + (", ..." if len(files) > 3 else "")
    return f"{len(files)} image file(s){f' ({shown})' if files else ''} and folders {folders or 'none'}"


def find_split_folders(root: Path) -> dict[str, Path]:
    """``train/``, ``val/``... subfolders of ``root`` that each hold a supported layout."""
    found = {}
    for split, names in SPLIT_ALIASES.items():
        for name in names:
            if (root / name).is_dir() and detect_layout(root / name) is not None:
                found[split] = root / name
                break
    return found if "train" in found else {}


@dataclass
class FolderListing:
    """The (image, mask) pairs of one folder, sorted by file name (frame order)."""

    folder: Path
    layout: str
    images: list[str]
    masks: list[str]
    """Expected mask path of each image (a missing file is reported by the checks)."""
    orphan_masks: list[str]


def list_folder(folder: Path, dataset_format: str | None) -> FolderListing:
    """Pair images with masks in ``folder``; ``dataset_format`` (``None`` = detect) must match the folder."""
    detected = detect_layout(folder)
    layout = dataset_format or detected
    if layout is None:
        raise RecipeError(
            f"Cannot tell the segmentation layout of {folder}: it has {_what_is_there(folder)}. Supported "
            + "; ".join(f"`{name}`: {text}" for name, text in LAYOUTS.items())
            + ". Set `dataset_format`, or use `dataset_name` for a Hub dataset."
        )
    if dataset_format is not None and detected != dataset_format:
        guess = f" It looks like `{detected}` instead: use --dataset_format {detected} (or auto)." if detected else ""
        raise RecipeError(
            f"dataset_format `{dataset_format}` expects {LAYOUTS[dataset_format]}, but {folder} has "
            f"{_what_is_there(folder)}.{guess}"
        )
    if layout == CAMVID:
        return _list_colour_masks(folder)
    if (folder / "images").is_dir() and _mask_folder(folder) is not None:
        return _list_mask_folders(folder)
    return _list_side_by_side(folder, INDEX_MASK_SUFFIX, layout)


def _list_colour_masks(folder: Path) -> FolderListing:
    mask_folder = _colour_mask_folder(folder)
    frames = [p for p in _image_files(folder) if not p.stem.endswith(COLOUR_MASK_SUFFIX)]
    masks = {p.stem: p for p in _image_files(mask_folder) if p.stem.endswith(COLOUR_MASK_SUFFIX)}
    expected = [masks.get(f"{p.stem}{COLOUR_MASK_SUFFIX}", mask_folder / f"{p.stem}{COLOUR_MASK_SUFFIX}.png")
                for p in frames]
    used = {m.stem for m in expected}
    orphans = [str(p) for stem, p in sorted(masks.items()) if stem not in used]
    return FolderListing(folder, CAMVID, [str(p) for p in frames], [str(m) for m in expected], orphans)


def _list_side_by_side(folder: Path, suffix: str, layout: str) -> FolderListing:
    files = _image_files(folder)
    masks = {p.stem: p for p in files if p.stem.endswith(suffix)}
    images = [p for p in files if not p.stem.endswith(suffix)]
    expected = [masks.get(f"{p.stem}{suffix}", folder / f"{p.stem}{suffix}.png") for p in images]
    used = {m.stem for m in expected}
    orphans = [str(p) for stem, p in sorted(masks.items()) if stem not in used]
    return FolderListing(folder, layout, [str(p) for p in images], [str(m) for m in expected], orphans)


def _list_mask_folders(folder: Path) -> FolderListing:
    image_root, mask_root = folder / "images", _mask_folder(folder)
    assert mask_root is not None

    def relative_stem(path: Path, root: Path) -> str:
        return str(path.relative_to(root).with_suffix(""))

    images = sorted(p for p in image_root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    masks = {relative_stem(p, mask_root): p for p in mask_root.rglob("*")
             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}
    expected = [masks.get(relative_stem(p, image_root), mask_root / p.relative_to(image_root).with_suffix(".png"))
                for p in images]
    used = {str(m) for m in expected}
    orphans = [str(p) for p in sorted(masks.values()) if str(p) not in used]
    return FolderListing(folder, INDEX_MASKS, [str(p) for p in images], [str(m) for m in expected], orphans)
