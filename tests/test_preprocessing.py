"""Evaluation inputs are exactly the checkpoint's image processor's (what ``pipeline()`` feeds the model), for the
processor configurations of 16 real Hub checkpoints and 10 timm configurations (``TimmWrapperImageProcessor``: timm's
own evaluation transform from ``pretrained_cfg``), on real non-square photos.

Tolerance: none (``torch.equal``). Our evaluation decodes with torchvision's libjpeg-turbo (EXIF applied) and
then calls the processor itself; ``pipeline()`` decodes with PIL (also libjpeg-turbo, default settings) and calls
the same processor. Both decoders give identical pixels for these JPEGs and PNGs, so any difference at all means
a preprocessing step differs. Training inputs share the processor's pixel steps (rescale, normalisation, channel
order): a uniform colour image, which no resize or crop changes, must come out identical through both paths.

timm processors: evaluation hands the decoded ``uint8`` images to the processor as a list, which it turns into PIL
images for timm's transform, as it does with ``pipeline()``'s PIL image (so tolerance none here too); training crops
run the transform's own ``ToTensor`` + ``Normalize``. For ``crop_mode: border`` (which pads to the model's aspect ratio
with the mean colour) the uniform image has the model's aspect ratio, so nothing is padded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import shared_dataset
from PIL import Image
from processor_configs import PROCESSOR_CONFIGS, TIMM_CONFIGS, write_checkpoint
from transformers.image_utils import load_image

from recipes.config import ModelArguments
from recipes.decode.tensors import decode_to_tensor
from recipes.model.build import build_image_processor
from recipes.tasks.classification.transforms import build_train_augmentation, transform_classification_batch
from recipes.tasks.segmentation.transforms import evaluation_inputs, processor_resizes_masks_exactly
from recipes.transforms import ProcessorGeometry, collate_images_and_labels, verified_fast_normalisation

SEGMENTATION = ("nvidia/segformer-b0-finetuned-ade-512-512", "nvidia/mit-b0", "google/deeplabv3_mobilenet_v2_1.0_513")
TIMM = tuple(TIMM_CONFIGS)
CLASSIFICATION = (*(name for name in PROCESSOR_CONFIGS if name not in SEGMENTATION), *TIMM)


def _processor(name: str, tmp_path: Path) -> object:
    folder = write_checkpoint(name, tmp_path / name.split(" ")[0].replace("/", "--"))
    return build_image_processor(ModelArguments(model_name_or_path=str(folder)))


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    """Real non-square photos: food101-mini JPEGs of several sizes and a CamSeq PNG frame."""
    food = shared_dataset("food101-mini")
    jpegs = [p for p in sorted((food / "test").rglob("*.jpg")) if Image.open(p).size[0] != Image.open(p).size[1]]
    frames = sorted(p for p in shared_dataset("camseq").rglob("*.png") if not p.stem.endswith("_L"))
    assert len(jpegs) >= 6 and frames
    return jpegs[::max(1, len(jpegs) // 6)][:6] + frames[:1]


@pytest.mark.real_data
@pytest.mark.parametrize("name", CLASSIFICATION)
def test_classification_eval_inputs_equal_the_processor(name: str, photos: list[Path], tmp_path: Path) -> None:
    processor = _processor(name, tmp_path)
    for path in photos:
        expected = processor(images=load_image(str(path)), return_tensors="pt")["pixel_values"]  # pipeline()'s path
        example = transform_classification_batch(
            {"image": [{"path": str(path), "bytes": None}], "label": [0]},
            image_column="image", label_column="label", augment=None, processor=processor,
        )
        ours = collate_images_and_labels(
            [{"pixel_values": example["pixel_values"][0], "labels": 0}], processor=processor
        )["pixel_values"]
        assert ours.shape == expected.shape, (name, path.name)
        assert torch.equal(ours, expected), (name, path.name, float((ours - expected).abs().max()))


@pytest.mark.real_data
@pytest.mark.parametrize("name", SEGMENTATION)
def test_segmentation_eval_inputs_and_masks_equal_the_processor(name: str, photos: list[Path], tmp_path: Path) -> None:
    processor = _processor(name, tmp_path)
    assert processor_resizes_masks_exactly(processor)
    for path in photos:
        image = decode_to_tensor({"path": str(path), "bytes": None})
        mask = torch.zeros(image.shape[-2:], dtype=torch.uint8)
        mask[:, ::5] = 3
        mask[: image.shape[-2] // 3] = 255
        pixel_values, labels = evaluation_inputs(image, mask, processor=processor, masks_through_processor=True)
        expected = processor(images=load_image(str(path)), segmentation_maps=[mask], do_reduce_labels=False,
                             return_tensors="pt")
        assert torch.equal(pixel_values, expected["pixel_values"][0]), (name, path.name)
        assert torch.equal(labels, expected["labels"][0]), (name, path.name)
        assert set(labels.unique().tolist()) <= {0, 3, 255}


def test_masks_are_never_interpolated_into_new_class_ids() -> None:
    """BEiT resizes masks with the image filter; the fallback resizes them with exact nearest neighbour."""
    from transformers import BeitImageProcessor

    processor = BeitImageProcessor(size={"height": 40, "width": 40})
    assert not processor_resizes_masks_exactly(processor)
    image = torch.randint(0, 255, (3, 57, 91), dtype=torch.uint8)
    mask = torch.zeros((57, 91), dtype=torch.uint8)
    mask[:, ::3] = 7
    pixel_values, labels = evaluation_inputs(image, mask, processor=processor, masks_through_processor=False)
    assert pixel_values.shape == (3, 40, 40) and labels.shape == (40, 40)
    assert set(labels.unique().tolist()) <= {0, 7}


@pytest.mark.parametrize("name", [*CLASSIFICATION, *SEGMENTATION])
def test_training_inputs_share_the_processor_pixel_steps(name: str, tmp_path: Path) -> None:
    """A uniform colour survives any resize or crop, so the training path (our augmentation, then the processor's
    pixel steps) must equal the full processor exactly: this catches normalisation, rescale and channel order."""
    processor = _processor(name, tmp_path)
    geometry = ProcessorGeometry.from_processor(processor)
    # timm's crop_mode border pads to the model's aspect ratio with the mean colour: give it that aspect ratio.
    border = TIMM_CONFIGS.get(name, {}).get("pretrained_cfg", {}).get("crop_mode") == "border"
    photo = Image.new("RGB", (331, round(331 * geometry.height / geometry.width)) if border else (331, 217),
                      (200, 30, 90))
    expected = processor(images=photo, return_tensors="pt")["pixel_values"]
    assert tuple(expected.shape[-2:]) == (geometry.height, geometry.width)
    example = transform_classification_batch(
        {"image": [photo], "label": [1]}, image_column="image", label_column="label",
        augment=build_train_augmentation("basic", geometry.height, geometry.width), processor=processor,
    )
    assert example["pixel_values"][0].dtype == torch.uint8
    ours = collate_images_and_labels([{"pixel_values": example["pixel_values"][0], "labels": 1}], processor=processor)
    assert torch.equal(ours["pixel_values"], expected), float((ours["pixel_values"] - expected).abs().max())
    fast = verified_fast_normalisation(processor)  # the collate's cheaper path, only where it is equivalent
    assert (fast is None) == (name in ("apple/mobilevit-small", "google/efficientnet-b0"))
    if fast is not None:
        quick = collate_images_and_labels([{"pixel_values": example["pixel_values"][0], "labels": 1}],
                                          processor=processor, fast=fast)
        assert torch.allclose(quick["pixel_values"], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["apple/mobilevit-small", "google/efficientnet-b0", "facebook/convnext-tiny-224"])
def test_batched_pixel_steps_equal_one_image_at_a_time(name: str, tmp_path: Path) -> None:
    from recipes.transforms import processor_pixel_values

    processor = _processor(name, tmp_path)
    geometry = ProcessorGeometry.from_processor(processor)
    images = [torch.randint(0, 256, (3, geometry.height, geometry.width), dtype=torch.uint8) for _ in range(3)]
    batched = processor_pixel_values(processor, images, sized=True)
    for image, row in zip(images, batched):
        assert torch.equal(row, processor_pixel_values(processor, [image], sized=True)[0])
