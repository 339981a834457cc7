"""A learnable synthetic street-scene segmentation set in the CamSeq01 layout.

``0016E5_XXXXX.png`` frames with ``0016E5_XXXXX_L.png`` RGB masks in the real CamSeq/CamVid colours and a
``label_colors.txt`` (``R G B<TAB>Name``, CRLF line endings, one or two tabs, like the real file). Each
scene: sky on top, buildings with windows along the horizon, trees, a road narrowing towards the
horizon with dashed lane markings, sidewalks, cars, poles and sometimes the camera car's hood (Void).
Every class has its own colour range and texture, so a tiny model learns it in a few epochs.

    python -m recipes.sample_data.streets quickstart_data/streets --frames 120
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES: dict[str, tuple[int, int, int]] = {  # a subset of CamSeq's 32 classes, in its (alphabetical) order
    "Building": (128, 0, 0),
    "Car": (64, 0, 128),
    "Column_Pole": (192, 192, 128),
    "LaneMkgsDriv": (128, 0, 192),
    "Road": (128, 64, 128),
    "Sidewalk": (0, 0, 192),
    "Sky": (128, 128, 128),
    "Tree": (128, 128, 0),
    "Void": (0, 0, 0),
}
CLASS_IDS = {name: index for index, name in enumerate(CLASSES)}
DOUBLE_TAB = {"Building", "Sidewalk", "Void"}  # as in the real label_colors.txt
FIRST_FRAME = 7959  # CamSeq01 numbers frames 0016E5_07959 ... 08159, every second frame


def write_label_colors(path: Path) -> Path:
    """The palette in CamSeq's ``label_colors.txt`` format, CRLF line endings included."""
    lines = [f"{r} {g} {b}\t{chr(9) if name in DOUBLE_TAB else ''}{name}" for name, (r, g, b) in CLASSES.items()]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("ascii"))
    return path


def draw_street(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One scene: ``(frame (H, W, 3) uint8, class ids (H, W) uint8)``."""
    labels = Image.new("L", (width, height), CLASS_IDS["Sky"])
    tint = Image.new("RGB", (width, height), (0, 0, 0))
    label_draw, tint_draw = ImageDraw.Draw(labels), ImageDraw.Draw(tint)

    def shape(kind: str, points: list[tuple[float, float]], name: str, colour: tuple[int, int, int]) -> None:
        for draw, fill in ((label_draw, CLASS_IDS[name]), (tint_draw, colour)):
            getattr(draw, kind)(points, fill=fill)

    horizon = rng.uniform(0.38, 0.52) * height
    centre = width * rng.uniform(0.4, 0.6)
    # ground: sidewalks everywhere below the horizon, then the road as a trapezoid towards a vanishing point
    shape("rectangle", [(0, horizon), (width, height)], "Sidewalk", (150, 150, 160))
    half_far, half_near = width * rng.uniform(0.04, 0.08), width * rng.uniform(0.38, 0.5)
    shape("polygon", [(centre - half_far, horizon), (centre + half_far, horizon),
                      (centre + half_near, height), (centre - half_near, height)], "Road", (70, 70, 75))
    for start in np.arange(0.1, 1.0, 0.22):  # dashed centre line, longer and wider near the camera
        top, bottom = start, start + 0.1
        y0, y1 = horizon + (height - horizon) * top, horizon + (height - horizon) * bottom
        half = 0.5 + 2.0 * bottom
        shape("polygon", [(centre - half, y0), (centre + half, y0), (centre + half + 1, y1), (centre - half - 1, y1)],
              "LaneMkgsDriv", (235, 235, 225))
    # buildings along the horizon
    x = -rng.uniform(0, 0.1) * width
    while x < width:
        building_width = rng.uniform(0.12, 0.3) * width
        top = rng.uniform(0.04, 0.75) * horizon
        gap = (centre - half_far - x) if x < centre < x + building_width else 0
        colour = tuple(int(c) for c in rng.integers([120, 60, 40], [200, 120, 100]))
        if gap <= 0 or rng.random() < 0.7:
            shape("rectangle", [(x, top), (x + building_width, horizon + 2)], "Building", colour)
        x += building_width + rng.uniform(0, 0.05) * width
    for _ in range(int(rng.integers(0, 3))):  # trees in front of the buildings
        cx, radius = rng.uniform(0, width), rng.uniform(0.06, 0.14) * width
        cy = horizon - radius * rng.uniform(0.6, 1.0)
        shape("ellipse", [(cx - radius, cy - radius), (cx + radius, cy + radius * 0.9)], "Tree", (50, 120, 40))
    for _ in range(int(rng.integers(1, 4))):  # cars on the road, bigger when closer
        depth = rng.uniform(0.15, 0.85)
        y_bottom = horizon + (height - horizon) * depth
        car_width = (0.12 + 0.4 * depth) * width * 0.6
        half_road = half_far + (half_near - half_far) * depth
        cx = centre + rng.uniform(-0.7, 0.7) * max(half_road - car_width / 2, 1)
        car_height = car_width * rng.uniform(0.55, 0.75)
        colour = tuple(int(c) for c in rng.choice([[200, 30, 30], [30, 60, 200], [230, 200, 40], [30, 160, 60],
                                                   [220, 220, 230], [40, 40, 45]]))
        shape("rectangle", [(cx - car_width / 2, y_bottom - car_height), (cx + car_width / 2, y_bottom)], "Car", colour)
        shape("rectangle", [(cx - car_width * 0.35, y_bottom - car_height * 0.95),
                            (cx + car_width * 0.35, y_bottom - car_height * 0.6)], "Car", (25, 30, 45))
    for _ in range(int(rng.integers(0, 3))):  # poles on the sidewalks
        side = rng.choice([-1, 1])
        depth = rng.uniform(0.2, 0.9)
        base_y = horizon + (height - horizon) * depth
        base_x = centre + side * (half_far + (half_near - half_far) * depth + rng.uniform(2, 0.1 * width))
        pole_width, pole_height = 1 + 3 * depth, (0.5 + depth) * horizon
        shape("rectangle", [(base_x - pole_width / 2, base_y - pole_height), (base_x + pole_width / 2, base_y)],
              "Column_Pole", (205, 195, 120))
    if rng.random() < 0.5:  # the camera car's hood, unlabelled in CamSeq
        shape("ellipse", [(-0.2 * width, height * 0.93), (1.2 * width, height * 1.2)], "Void", (15, 15, 18))

    ids = np.asarray(labels, dtype=np.uint8)
    frame = np.asarray(tint, dtype=np.float32).copy()
    rows, cols = np.mgrid[0:height, 0:width]
    sky = ids == CLASS_IDS["Sky"]
    ramp = (rows / max(horizon, 1.0))[..., None]
    frame[sky] = ((1 - ramp) * np.array([90, 140, 220]) + ramp * np.array([200, 215, 235]))[sky]
    windows = ((cols // 5) % 2 == 0) & ((rows // 6) % 2 == 0)
    frame[(ids == CLASS_IDS["Building"]) & windows] *= 0.45
    frame[ids == CLASS_IDS["Tree"]] += rng.normal(0, 25, size=(int((ids == CLASS_IDS["Tree"]).sum()), 3))
    tiles = ((rows + cols) % 7 == 0) | (cols % 9 == 0)
    frame[(ids == CLASS_IDS["Sidewalk"]) & tiles] *= 0.8
    frame *= rng.uniform(0.8, 1.15)  # exposure
    frame += rng.normal(0, 6, size=frame.shape)
    return np.clip(frame, 0, 255).astype(np.uint8), ids


def make_streets_dataset(
    root: str | Path, n_frames: int = 120, seed: int = 0, size: tuple[int, int] = (96, 128)
) -> Path:
    """Write ``n_frames`` frames of ``size`` (height, width) with their ``_L.png`` masks and
    ``label_colors.txt`` into ``root`` (CamSeq layout); return ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = np.array(list(CLASSES.values()), dtype=np.uint8)
    height, width = size
    for index in range(n_frames):
        frame, ids = draw_street(height, width, rng)
        stem = f"0016E5_{FIRST_FRAME + 2 * index:05d}"
        Image.fromarray(frame).save(root / f"{stem}.png")
        Image.fromarray(colours[ids]).save(root / f"{stem}_L.png")
    write_label_colors(root / "label_colors.txt")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    args = parser.parse_args()
    make_streets_dataset(args.root, args.frames, args.seed, (args.height, args.width))
    print(f"Wrote {args.frames} street frames to {args.root}")


if __name__ == "__main__":
    main()
