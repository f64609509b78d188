"""Grouped bar charts as PNG files with numpy and zlib only (the benchmarks must not need matplotlib).

A chart is a list of panels; each panel has a title, category labels (x), named series of values and
optional horizontal reference lines. Text uses a built-in 5x7 pixel font (upper case, digits and a
little punctuation), drawn at 2x.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_GLYPHS = {
    "A": "01110 10001 10001 11111 10001 10001 10001", "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110", "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111", "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111", "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110", "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001", "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001", "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110", "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101", "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110", "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110", "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010", "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100", "Z": "11111 00001 00010 00100 01000 10000 11111",
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000", ".": "00000 00000 00000 00000 00000 01100 01100",
    ":": "00000 01100 01100 00000 01100 01100 00000", "-": "00000 00000 00000 11111 00000 00000 00000",
    "/": "00001 00010 00010 00100 01000 01000 10000", "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000", "=": "00000 00000 11111 00000 11111 00000 00000",
    "%": "11001 11010 00010 00100 01000 01011 10011",
    ",": "00000 00000 00000 00000 01100 00100 01000", "+": "00000 00100 00100 11111 00100 00100 00000",
}
SCALE = 2
CHAR_W = 6 * SCALE
WHITE = (255, 255, 255)
BLACK = (30, 30, 30)
GREY = (200, 200, 200)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40)]


@dataclass
class Panel:
    title: str
    categories: list[str]
    series: dict[str, list[float]]
    lines: dict[str, float] = field(default_factory=dict)  # label -> y value of a dashed reference line


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.pixels = np.full((height, width, 3), 255, dtype=np.uint8)

    def rect(self, x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int]) -> None:
        h, w = self.pixels.shape[:2]
        x0, x1 = sorted((max(0, min(w, x0)), max(0, min(w, x1))))
        y0, y1 = sorted((max(0, min(h, y0)), max(0, min(h, y1))))
        self.pixels[y0:y1, x0:x1] = color

    def hline(self, x0: int, x1: int, y: int, color: tuple[int, int, int], dash: int = 0) -> None:
        for x in range(x0, x1):
            if not dash or (x - x0) // dash % 2 == 0:
                self.rect(x, y, x + 1, y + 2, color)

    def text(self, x: int, y: int, message: str, color: tuple[int, int, int] = BLACK) -> None:
        for i, ch in enumerate(message.upper()):
            rows = _GLYPHS.get(ch, _GLYPHS[" "]).split()
            for r, row in enumerate(rows):
                for c, bit in enumerate(row):
                    if bit == "1":
                        px, py = x + i * CHAR_W + c * SCALE, y + r * SCALE
                        self.rect(px, py, px + SCALE, py + SCALE, color)

    def save(self, path: Path) -> None:
        height, width = self.pixels.shape[:2]
        raw = b"".join(b"\x00" + self.pixels[row].tobytes() for row in range(height))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
               + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
        path.write_bytes(png)


def _label(value: float) -> str:
    if value == 0:
        return "0"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 1 else f"{value:.2f}"


def _nice_step(peak: float) -> float:
    """A 1, 2 or 5 times a power of ten, giving four to eight grid lines up to `peak`."""
    power = 10 ** np.floor(np.log10(peak / 4))
    for factor in (1, 2, 5, 10):
        if peak / (factor * power) <= 8:
            return float(factor * power)
    return float(10 * power)


def draw(panels: list[Panel], path: Path, title: str = "", panel_w: int = 560, panel_h: int = 420) -> None:
    """Panels side by side; series share colours across panels (legend at the bottom)."""
    top = 40 if title else 10
    names = list(dict.fromkeys(n for p in panels for n in p.series))
    canvas = Canvas(panel_w * len(panels), top + panel_h + 40)
    if title:
        canvas.text(12, 12, title)
    for index, panel in enumerate(panels):
        _draw_panel(canvas, panel, index * panel_w, top, panel_w, panel_h, names)
    x = 12
    for n, name in enumerate(names):
        canvas.rect(x, top + panel_h + 12, x + 16, top + panel_h + 28, PALETTE[n % len(PALETTE)])
        canvas.text(x + 22, top + panel_h + 14, name)
        x += 22 + CHAR_W * len(name) + 30
    canvas.save(path)


def _draw_panel(canvas: Canvas, panel: Panel, x0: int, y0: int, width: int, height: int, names: list[str]) -> None:
    left, right, top, bottom = x0 + 60, x0 + width - 20, y0 + 40, y0 + height - 40
    canvas.text(x0 + 20, y0 + 8, panel.title)
    values = [v for vs in panel.series.values() for v in vs] + list(panel.lines.values())
    step = _nice_step(max(values + [1e-9]))
    peak = max(max(values + [1e-9]) * 1.12, step)
    scale = (bottom - top) / peak
    for tick in np.arange(0, peak, step):
        y = int(bottom - tick * scale)
        canvas.hline(left, right, y, GREY)
        canvas.text(x0 + 4, y - 6, _label(float(tick)))
    groups = len(panel.categories)
    group_w = (right - left) / max(groups, 1)
    bar_w = int(group_w * 0.7 / max(len(panel.series), 1))
    for g, category in enumerate(panel.categories):
        gx = int(left + g * group_w + group_w * 0.15)
        for s, name in enumerate(panel.series):
            value = panel.series[name][g]
            bx = gx + s * bar_w
            color = PALETTE[names.index(name) % len(PALETTE)]
            canvas.rect(bx + 2, int(bottom - value * scale), bx + bar_w - 2, bottom, color)
            label = _label(value)
            canvas.text(bx + max(0, (bar_w - CHAR_W * len(label)) // 2), int(bottom - value * scale) - 18, label)
        canvas.text(int(gx + (bar_w * len(panel.series) - CHAR_W * len(category)) / 2), bottom + 10, category)
    canvas.hline(left, right, bottom, BLACK)
    for label, value in panel.lines.items():
        y = int(bottom - value * scale)
        canvas.hline(left, right, y, BLACK, dash=6)
        canvas.text(right - CHAR_W * len(label), y - 18, label)
