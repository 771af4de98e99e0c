"""Where attention lands: the pointing game and the attention mass inside a box, beside a uniform map's."""

from __future__ import annotations

import numpy as np

POINTING_TOLERANCE = 15 / 224  # the pointing game's 15 px at 224 px (Zhang et al. 2016), as a share of the side


def boxes_in_cache_frame(boxes: np.ndarray, source_shapes: np.ndarray, size: int) -> np.ndarray:
    """Boxes (n, 4: x, y, w, h in each source image's pixels) in the ``size`` px frame of the pixel cache;
    ``source_shapes`` (n, 2) are the images' (height, width) as they were decoded."""
    scale_x, scale_y = size / source_shapes[:, 1], size / source_shapes[:, 0]
    return np.asarray(boxes, float) * np.stack([scale_x, scale_y, scale_x, scale_y], axis=1)


def _box_mask(shape: tuple[int, int], box: np.ndarray, margin: float = 0.0) -> np.ndarray:
    x, y, w, h = box
    inside = np.zeros(shape, dtype=bool)
    y0, y1 = int(np.floor(y - margin)), int(np.ceil(y + h + margin))
    x0, x1 = int(np.floor(x - margin)), int(np.ceil(x + w + margin))
    inside[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    return inside


def localization_scores(maps: np.ndarray, boxes: np.ndarray, tolerance: float) -> dict:
    """Pointing game and the share of attention mass inside the box, each next to what a uniform map scores.

    Pointing game: a hit when the map's peak lies inside the box grown by ``tolerance`` px (the
    standard game's tolerance for maps coarser than the image); ``pointing_game_strict`` uses no
    tolerance. A uniform map's peak is anywhere, so it hits as often as the grown box's share of the
    image; its mass in the box is the box's share. ``maps``: (n, s, s) non-negative; ``boxes``:
    (n, 4) as x, y, w, h in the maps' pixel frame.
    """
    hits, strict, mass, share, grown_share = [], [], [], [], []
    for m, box in zip(maps, boxes):
        inside, grown = _box_mask(m.shape, box), _box_mask(m.shape, box, tolerance)
        peak = np.unravel_index(int(np.argmax(m)), m.shape)
        hits.append(bool(grown[peak]))
        strict.append(bool(inside[peak]))
        total = float(m.sum())
        mass.append(float(m[inside].sum() / total) if total > 0 else 0.0)
        share.append(float(inside.mean()))
        grown_share.append(float(grown.mean()))
    if not hits:
        return {"n_images": 0, "pointing_game_hit_rate": None, "attention_mass_in_box": None, "uniform_reference": None}
    return {
        "n_images": len(hits),
        "pointing_game_hit_rate": float(np.mean(hits)),
        "pointing_game_strict": float(np.mean(strict)),
        "pointing_tolerance_px": float(tolerance),
        "uniform_pointing_reference": float(np.mean(grown_share)),
        "attention_mass_in_box": float(np.mean(mass)),
        "uniform_reference": float(np.mean(share)),
        "mass_over_uniform": float(np.mean(mass) / np.mean(share)) if np.mean(share) > 0 else None,
    }
