"""The report's pictures as ComfyUI IMAGEs ([1, H, W, 3] floats in 0..1): the before/after grid and the
strength curve, drawn with Pillow (which ComfyUI itself requires)."""
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..unlearning.evaluation.concept_score import prompt_label

ROLE_COLOURS = {"target": "#d62728", "probe": "#ff7f0e", "anchor": "#2ca02c", "preserved": "#1f77b4"}


def _font(size):
    return ImageFont.load_default(size=size)


def _as_image(canvas) -> torch.Tensor:
    return torch.from_numpy(np.asarray(canvas.convert("RGB"), dtype=np.float32) / 255.0)[None]


def _pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image.clamp(0, 1) * 255).round().byte().cpu().numpy())


def _wrapped(draw, text, font, width):
    """`text` broken into lines no wider than `width` pixels."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + [line]


def before_after_grid(rows, titles=("original", "erased")) -> torch.Tensor:
    """rows: (caption, image [H, W, 3] per title); a row of images per caption, one column per title (by default
    the original model's image on the left, the erased model's on the right), the caption above them."""
    height, width = rows[0][1].shape[:2]
    columns = len(titles)
    size = max(12, min(28, width // 16))
    font = _font(size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    captions = [_wrapped(measure, row[0], font, columns * width - 8) for row in rows]
    header = size + 10
    bands = [len(lines) * (size + 4) + 8 for lines in captions]
    canvas = Image.new("RGB", (columns * width, header + sum(bands) + len(rows) * height), "white")
    draw = ImageDraw.Draw(canvas)
    for column, title in enumerate(titles):
        draw.text((column * width + 4, 4), title, fill="black", font=font)
    y = header
    for (_, *images), lines, band in zip(rows, captions, bands):
        for k, line in enumerate(lines):
            draw.text((4, y + 4 + k * (size + 4)), line, fill="black", font=font)
        y += band
        for column, image in enumerate(images):
            canvas.paste(_pil(image), (column * width, y))
        y += height
    return _as_image(canvas)


def strength_plot(strengths, curves) -> torch.Tensor:
    """curves: (label, role, [score per strength]); the concept score against the erasure's strength, a line
    per prompt coloured by its role, a legend below."""
    width, plot_height, margin = 720, 360, 60
    font = _font(14)
    legend_rows = len(curves)
    canvas = Image.new("RGB", (width, plot_height + 50 + 18 * legend_rows), "white")
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = margin, 30, width - 20, plot_height
    values = [v for _, _, scores in curves for v in scores]
    low, high = min(-1.0, min(values)), max(1.0, max(values))
    first, last = min(strengths), max(strengths)

    def xy(strength, score):
        x = left + (right - left) * ((strength - first) / (last - first) if last > first else 0.5)
        return x, bottom - (bottom - top) * (score - low) / (high - low)

    draw.text((left, 6), "concept score against the erasure's strength (+1 like the target, -1 like the anchor)",
              fill="black", font=font)
    draw.rectangle([left, top, right, bottom], outline="black")
    for score in (-1, 0, 1):
        y = xy(first, score)[1]
        draw.line([left, y, right, y], fill="#dddddd")
        draw.text((8, y - 8), f"{score:+d}", fill="black", font=font)
    for strength in strengths:
        x = xy(strength, low)[0]
        draw.text((x - 10, bottom + 6), f"{strength:g}", fill="black", font=font)
    draw.text((right - 70, bottom + 24), "strength", fill="black", font=font)
    for row, (label, role, scores) in enumerate(curves):
        colour = ROLE_COLOURS[role]
        points = [xy(s, v) for s, v in zip(strengths, scores)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for x, y in points:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=colour)
        y = bottom + 46 + 18 * row
        draw.line([left, y + 8, left + 24, y + 8], fill=colour, width=3)
        draw.text((left + 32, y), f"{prompt_label(label)} ({role})", fill="black", font=font)
    return _as_image(canvas)
