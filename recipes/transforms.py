"""Shared transform helpers: processor geometry and pixel steps, the collate, batch normalisation (on the CPU or, for
``gpu_decode``, on the device)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from recipes.config import RecipeError
from recipes.decode import device as device_decode

PROBE_SIZES = ((480, 640), (640, 480))
"""Two input shapes (landscape, portrait) that show whether a processor's output size depends on the input."""


@dataclass(frozen=True)
class ProcessorGeometry:
    """The image processor's output size (probed, so it is exactly what ``pipeline()`` feeds the model) and its
    normalisation constants."""

    height: int
    width: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    rescale_factor: float = 1 / 255

    @classmethod
    def from_processor(cls, processor: Any) -> ProcessorGeometry:
        """Run the processor on a landscape and a portrait blank image and read the size of ``pixel_values``.

        Raises :class:`RecipeError` when the output size follows the input (no fixed model input), since
        training crops must end at the size evaluation uses.
        """
        sizes = set()
        for height, width in PROBE_SIZES:
            blank = torch.zeros((3, height, width), dtype=torch.uint8)
            sizes.add(tuple(processor(images=[blank], return_tensors="pt")["pixel_values"].shape[-2:]))
        if len(sizes) != 1:
            raise RecipeError(
                f"The image processor {type(processor).__name__} outputs a size that depends on the input "
                f"({sorted(sizes)} for inputs {list(PROBE_SIZES)}); this task needs a fixed input size. Set "
                "`image_processor_overrides`, e.g. {size: {height: 224, width: 224}}."
            )
        (height, width), = sizes
        timm = timm_data_config(processor)
        if timm is not None:  # timm's transform: ToTensor (÷ 255), then Normalize(mean, std)
            channels = int(timm["input_size"][0])
            if channels != 3:
                raise RecipeError(
                    f"This timm model expects {channels}-channel input (pretrained_cfg input_size "
                    f"{list(timm['input_size'])}); images are decoded to RGB here. Use a 3-channel checkpoint."
                )
            mean = tuple(float(v) for v in timm["mean"])
            std = tuple(float(v) for v in timm["std"])
            return cls(height=height, width=width, mean=mean, std=std)  # type: ignore[arg-type]
        if getattr(processor, "do_normalize", True):
            mean = tuple(float(v) for v in (processor.image_mean or (0.5, 0.5, 0.5)))
            std = tuple(float(v) for v in (processor.image_std or (0.5, 0.5, 0.5)))
        else:
            mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        rescale = float(getattr(processor, "rescale_factor", 1 / 255) or 1 / 255)
        return cls(height=height, width=width, mean=mean, std=std, rescale_factor=rescale)  # type: ignore[arg-type]


def processor_pixel_values(processor: Any, images: list[torch.Tensor], *, sized: bool) -> torch.Tensor:
    """The processor's ``pixel_values`` for upright RGB ``uint8`` (C, H, W) images.

    ``sized=False``: everything the processor does (resize, crop, rescale, normalise, channel order…), equal to
    what ``pipeline()`` computes from the same file. ``sized=True``: the images are already at the processor's
    output size (a training augmentation made them), so resizing and cropping are skipped and only the pixel
    steps run — still the processor's own code, so training and evaluation inputs share one format.
    """
    kwargs: dict[str, Any] = {"return_tensors": "pt"}
    if sized and timm_data_config(processor) is not None:
        return timm_pixel_steps(processor, images)
    if sized:
        kwargs["do_resize"] = False
        if hasattr(processor, "do_center_crop"):
            kwargs["do_center_crop"] = False
        # Same-size images as one (B, C, H, W) tensor: the processor's torchvision backend then runs each step
        # once for the batch (same values as a list, about half the time).
        return processor(images=torch.stack(images), **kwargs)["pixel_values"]
    return processor(images=images, **kwargs)["pixel_values"]


TIMM_TO_TENSOR = ("ToTensor", "MaybeToTensor")
"""The step of a timm transform where the geometry ends: PIL/array ``uint8`` → float ``(C, H, W)`` ÷ 255."""


def timm_data_config(processor: Any) -> dict[str, Any] | None:
    """timm's resolved data config (``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode``, ``mean``,
    ``std``) of transformers' ``TimmWrapperImageProcessor``, whose preprocessing is timm's own evaluation
    transform (``val_transforms``); ``None`` for every other processor."""
    config = getattr(processor, "data_config", None)
    if isinstance(config, dict) and hasattr(processor, "val_transforms"):
        return config
    return None


def timm_pixel_steps(processor: Any, images: Sequence[torch.Tensor]) -> torch.Tensor:
    """The pixel steps of a timm processor's evaluation transform on images already at its output size: the
    transform's own steps from ``ToTensor`` on (÷ 255, ``Normalize``), skipping its resize and crop.

    ``pipeline()`` hands timm's transform a PIL image; here each ``uint8`` (C, H, W) image enters as the same
    ``uint8`` (H, W, C) array, which ``ToTensor`` converts exactly as it converts the PIL image."""
    steps = list(processor.val_transforms.transforms)
    start = next((i for i, step in enumerate(steps) if type(step).__name__ in TIMM_TO_TENSOR), None)
    if start is None:
        raise RecipeError(
            f"The timm transform of this checkpoint has no ToTensor step ({steps}); its pixel steps are unknown. "
            "Use a checkpoint whose pretrained_cfg gives a standard timm evaluation transform."
        )
    out = []
    for image in images:
        pixels: Any = image.detach().cpu().permute(1, 2, 0).numpy()
        for step in steps[start:]:
            pixels = step(pixels)
        out.append(pixels)
    return torch.stack(out)


def verified_fast_normalisation(processor: Any) -> ProcessorGeometry | None:
    """The processor's constants when its pixel steps on sized ``uint8`` images are exactly rescale + normalise
    (checked here against the processor itself on a random batch, to 1e-6), so the collate can run the cheaper
    single-allocation :func:`normalize_batch`; ``None`` (use the processor) when they are anything more, such as
    MobileViT's BGR flip or EfficientNet's second normalisation."""
    geometry = ProcessorGeometry.from_processor(processor)
    generator = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, geometry.height, geometry.width), dtype=torch.uint8, generator=generator)
              for _ in range(2)]
    expected = processor_pixel_values(processor, images, sized=True)
    fast = normalize_batch(torch.stack(images), geometry)
    same = expected.shape == fast.shape and torch.allclose(fast, expected.float(), atol=1e-6, rtol=0)
    return geometry if same else None


def collate_images_and_labels(
    examples: list[dict[str, Any]], *, processor: Any, fast: ProcessorGeometry | None = None,
    keep_uint8: bool = False,
) -> dict[str, torch.Tensor]:
    """Stack examples into model inputs. ``uint8`` images come from a training augmentation at the processor's
    output size and get the processor's pixel steps here, once per batch (``fast``: the verified equivalent
    from :func:`verified_fast_normalisation`), or, with ``fast`` and ``keep_uint8``, stay ``uint8`` for the
    training process to normalise on its device (:func:`normalize_uint8_inputs`); float images were fully
    processed by the evaluation transform. Labels (class ids or masks) are stacked."""
    labels = [example["labels"] for example in examples]
    labels = torch.stack(labels) if isinstance(labels[0], torch.Tensor) else torch.tensor(labels)
    pixels = [example["pixel_values"] for example in examples]
    if pixels[0].dtype != torch.uint8:
        pixel_values = torch.stack(pixels)
    elif fast is not None and keep_uint8:
        pixel_values = stack_uint8(pixels)
    elif fast is not None:
        pixel_values = normalize_batch(pixels, fast)
    else:
        pixel_values = processor_pixel_values(processor, pixels, sized=True)
    return {"pixel_values": pixel_values, "labels": labels}


def stack_uint8(pixels: Sequence[torch.Tensor]) -> torch.Tensor:
    """Same-size ``uint8`` (C, H, W) images as one (B, C, H, W) batch in channels-last layout (the layout the
    crop path produces, so each image is one plain copy), in shared memory inside a ``DataLoader`` worker."""
    channels, height, width = pixels[0].shape
    rows = _empty_shared((len(pixels), height, width, channels), torch.uint8, pixels[0].device)
    batch = rows.permute(0, 3, 1, 2)
    for image, slot in zip(pixels, batch):
        slot.copy_(image)
    return batch


def normalize_uint8_inputs(
    inputs: dict[str, Any], device: torch.device, *, geometry: ProcessorGeometry
) -> dict[str, Any]:
    """Training-process half of ``normalize_on_device``: ``uint8`` ``pixel_values`` (as the workers collated
    them) moved to ``device`` and rescaled + normalised there; anything else is returned unchanged."""
    pixels = inputs.get("pixel_values")
    if isinstance(pixels, torch.Tensor) and pixels.dtype == torch.uint8:
        inputs["pixel_values"] = normalize_batch(pixels.to(device, non_blocking=True), geometry)
    return inputs


def uint8_batches(processor: Any, data_args: Any) -> tuple[ProcessorGeometry | None, bool]:
    """``(fast, keep_uint8)`` for a collate: the verified normalisation constants of ``processor`` and whether
    training batches stay ``uint8`` until the training process (``data_args.normalize_on_device``)."""
    fast = verified_fast_normalisation(processor)
    return fast, bool(fast is not None and getattr(data_args, "normalize_on_device", False))


def device_normaliser(processor: Any, data_args: Any) -> Callable[[dict[str, Any], torch.device], dict] | None:
    """The Trainer-side transform that normalises ``uint8`` training batches (``None`` when they never come)."""
    fast, keep_uint8 = uint8_batches(processor, data_args)
    return partial(normalize_uint8_inputs, geometry=fast) if keep_uint8 else None


def _empty_shared(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised tensor; inside a ``DataLoader`` worker it is allocated in shared memory (as
    ``default_collate`` does), so handing it to the main process copies nothing."""
    if torch.utils.data.get_worker_info() is not None and device.type == "cpu":
        try:
            storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
            return torch.empty(0, dtype=dtype).new(storage).view(shape)
        except (AttributeError, RuntimeError):  # private API of torch's default_collate: fall back
            pass
    return torch.empty(shape, dtype=dtype, device=device)


def normalize_batch(pixels: torch.Tensor | Sequence[torch.Tensor], geometry: ProcessorGeometry) -> torch.Tensor:
    """Rescale and normalise ``uint8`` images (a (B, C, H, W) batch or a list of same-size (C, H, W) images, in
    any memory layout) into one contiguous float32 (B, C, H, W) tensor.

    Computed as ``pixels * (rescale / std) - mean / std`` image by image straight into the single output
    allocation (one fused multiply-add per image; no stacked ``uint8`` copy, no batch-sized temporaries)."""
    first = pixels[0]
    mean = torch.tensor(geometry.mean, dtype=torch.float32, device=first.device).view(-1, 1, 1)
    std = torch.tensor(geometry.std, dtype=torch.float32, device=first.device).view(-1, 1, 1)
    scale, shift = geometry.rescale_factor / std, -mean / std
    out = _empty_shared((len(pixels), *first.shape), torch.float32, first.device)
    if isinstance(pixels, torch.Tensor) and pixels.device.type != "cpu":  # whole-batch kernels on a GPU
        return torch.addcmul(shift, pixels.float(), scale, out=out)
    for image, normalized in zip(pixels, out):
        torch.addcmul(shift, image, scale, out=normalized)
    return out


def pixels_on_device(
    inputs: dict[str, Any], device: torch.device, *, augment: Callable[[torch.Tensor], torch.Tensor],
    processor: Any, fast: ProcessorGeometry | None,
) -> dict[str, Any]:
    """The Trainer-side half of ``gpu_decode``: ``encoded_images`` → ``pixel_values`` on ``device`` (decode,
    the training augmentation image by image, then the processor's pixel steps for the stacked batch); batches
    without encoded images pass unchanged."""
    if "encoded_images" not in inputs:
        return inputs
    batch: device_decode.EncodedImages = inputs.pop("encoded_images")
    images = [augment(image) for image in device_decode.decode_batch(batch, device)]
    if fast is not None:
        pixel_values = normalize_batch(torch.stack(images), fast)
    else:
        pixel_values = processor_pixel_values(processor, images, sized=True).to(device)
    inputs["pixel_values"] = pixel_values
    return inputs
