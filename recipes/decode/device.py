"""Training images decoded on the accelerator (``gpu_decode``): DataLoader workers only read the encoded bytes;
the main process decodes the batch with nvJPEG (``torchvision.io.decode_jpeg(device="cuda")``) and runs the same
augmentation and pixel steps there (:func:`recipes.transforms.pixels_on_device`).
For CPU-starved GPU machines, where JPEG decoding is the bottleneck.

Files that nvJPEG must not take are decoded by the worker as usual, so every image arrives upright and RGB as on
the CPU path: other formats, EXIF-rotated JPEGs, CMYK/YCCK JPEGs, greyscale JPEGs (torchvision 0.26's nvJPEG path
returns wrong pixels for them in RGB mode, measured on an H200), JPEGs stored as RGB rather than YCbCr (not
measured on nvJPEG, so not trusted to it) and files without the end-of-image marker (nvJPEG fills a truncated
file's missing rows without an error; the CPU decode names the file).

nvJPEG upsamples chroma without libjpeg-turbo's "fancy" (triangle) filter, so its pixels equal libjpeg-turbo's with
``fastupsample`` (progressive files: within 3 grey levels) and differ from the CPU path's by about one grey level
on average (tests/test_gpu.py; measured with torchvision 0.26 on an H200).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from recipes.decode.images import max_image_pixels
from recipes.decode.jpeg import JPEG_MAGIC, exif_orientation, jpeg_has_end_marker
from recipes.decode.tensors import decode_to_tensor

RGB_COMPONENT_IDS = [ord("R"), ord("G"), ord("B")]
"""Component ids of a JPEG whose channels are stored as R, G, B (no YCbCr transform)."""


@dataclass
class EncodedImages:
    """A batch's images as the workers left them: 1-D ``uint8`` JPEG bytes (``encoded[i]``) or decoded
    (C, H, W) ``uint8`` pixels. Not a tensor or list, so the Trainer and accelerate leave it on the CPU, where
    nvJPEG reads its input."""

    items: list[torch.Tensor]
    encoded: list[bool]

    def __len__(self) -> int:
        return len(self.items)


def device_decodable_bytes(record: Any) -> torch.Tensor | None:
    """The record's JPEG bytes as a 1-D ``uint8`` tensor when nvJPEG can decode them to the same upright RGB
    pixels as the CPU path (complete baseline/progressive YCbCr JPEGs without EXIF rotation); else ``None``."""
    data = record.get("bytes") if isinstance(record, dict) else None
    if data is None and isinstance(record, dict) and record.get("path"):
        if not str(record["path"]).lower().endswith((".jpg", ".jpeg")):
            return None
        try:
            with open(record["path"], "rb") as handle:
                data = handle.read()
        except OSError:
            return None  # the CPU path reports the file
    if data is None or data[:2] != JPEG_MAGIC or not jpeg_has_end_marker(data):
        return None
    try:
        with Image.open(io.BytesIO(data)) as header:  # reads the header only
            if header.mode != "RGB" or stored_as_rgb(header) or exif_orientation(header) != 1:
                return None
            if header.width * header.height > max_image_pixels():
                return None  # the CPU path reports it, before decoding

    except Exception:
        return None  # let the CPU path decode it and name the file if it is broken
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def stored_as_rgb(header: Image.Image) -> bool:
    """Whether a 3-channel JPEG stores R, G, B rather than YCbCr (Adobe transform 0, or components named R, G, B)."""
    component_ids = [layer[0] for layer in getattr(header, "layer", ())]
    return header.info.get("adobe_transform") == 0 or component_ids == RGB_COMPONENT_IDS


def encode_for_device(records: list[Any]) -> tuple[list[torch.Tensor], list[bool]]:
    """Worker side: JPEG bytes for the device where possible, decoded pixels otherwise."""
    items, encoded = [], []
    for record in records:
        data = device_decodable_bytes(record)
        items.append(data if data is not None else decode_to_tensor(record))
        encoded.append(data is not None)
    return items, encoded


def decode_batch(batch: EncodedImages, device: torch.device) -> list[torch.Tensor]:
    """Decode the encoded items in one batched call on ``device``; move the rest there."""
    positions = [i for i, flag in enumerate(batch.encoded) if flag]
    images = [item if flag else item.to(device, non_blocking=True) for item, flag in zip(batch.items, batch.encoded)]
    if positions:
        try:
            decoded = decode_jpeg([batch.items[i] for i in positions], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # a file nvJPEG rejects: decode those one by one on the CPU (names a broken file)
            decoded = [decode_to_tensor({"bytes": bytes(batch.items[i].numpy())}).to(device) for i in positions]
        for position, image in zip(positions, decoded):
            images[position] = image
    return images


def collate_encoded_images(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate of ``gpu_decode`` training batches: the images stay encoded (:class:`EncodedImages`)."""
    labels = torch.tensor([example["labels"] for example in examples])
    items = EncodedImages([e["encoded_image"] for e in examples], [bool(e["is_encoded"]) for e in examples])
    return {"encoded_images": items, "labels": labels}
