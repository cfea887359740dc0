"""Small SVG building blocks for problem renderers (``problems/*/render.py``) and a sanitiser for what they return.

Renderers are trusted code of a problem, but they draw numbers and names taken from archive rows, so everything
they emit passes through ``sanitize_svg`` before a page or a report shows it: an allow-list of SVG elements and
attributes, no scripts, no event handlers, no external references, text re-escaped on output.
"""

from __future__ import annotations

import html
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

SVG_NS = "http://www.w3.org/2000/svg"
MAX_SVG_BYTES = 2_000_000

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
_VIRIDIS = ((0.0, (68, 1, 84)), (0.25, (59, 82, 139)), (0.5, (33, 145, 140)), (0.75, (94, 201, 98)),
            (1.0, (253, 231, 37)))

ALLOWED_TAGS = frozenset({
    "svg", "g", "defs", "title", "desc", "circle", "ellipse", "rect", "line", "polyline", "polygon", "path", "text",
    "tspan", "linearGradient", "radialGradient", "stop", "clipPath",
})
ALLOWED_ATTRS = frozenset({
    "x", "y", "x1", "y1", "x2", "y2", "cx", "cy", "r", "rx", "ry", "width", "height", "viewBox", "points", "d",
    "fill", "stroke", "stroke-width", "stroke-dasharray", "stroke-linecap", "stroke-linejoin", "opacity",
    "fill-opacity", "stroke-opacity", "transform", "font-size", "font-family", "font-weight", "font-style",
    "text-anchor", "dominant-baseline", "class", "id", "offset", "stop-color", "stop-opacity", "gradientUnits",
    "fx", "fy", "clip-path", "preserveAspectRatio", "version", "role", "aria-label", "dx", "dy", "vector-effect",
})
_BAD_VALUE = re.compile(r"javascript:|vbscript:|data:|expression\s*\(|@import|[<>]", re.IGNORECASE)
_URL = re.compile(r"url\(\s*([^)]*)\)", re.IGNORECASE)


class UnsafeSvg(ValueError):
    """The text is not an SVG document this module will pass on."""


def num(value: float, digits: int = 4) -> str:
    """A number for an SVG attribute: finite, short, never markup."""
    value = float(value)
    if not math.isfinite(value):
        value = 0.0
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def viridis(t: float) -> str:
    """Colour of ``t`` in [0, 1] on the viridis scale, as ``#rrggbb``."""
    t = min(1.0, max(0.0, t if math.isfinite(t) else 0.0))
    for (t0, c0), (t1, c1) in zip(_VIRIDIS, _VIRIDIS[1:], strict=False):
        if t <= t1:
            f = (t - t0) / (t1 - t0) if t1 > t0 else 0.0
            return "#" + "".join(f"{round(a + (b - a) * f):02x}" for a, b in zip(c0, c1, strict=True))
    return "#fde725"


def document(width: float, height: float, body: str, title: str = "") -> str:
    head = f"<title>{esc(title)}</title>" if title else ""
    return (f'<svg xmlns="{SVG_NS}" viewBox="0 0 {num(width)} {num(height)}" width="{num(width)}" '
            f'height="{num(height)}" font-family="sans-serif">{head}{body}</svg>')


def text(x: float, y: float, content: object, size: float = 12, anchor: str = "start", fill: str = "#333",
         weight: str = "normal") -> str:
    return (f'<text x="{num(x)}" y="{num(y)}" font-size="{num(size)}" text-anchor="{esc(anchor)}" '
            f'fill="{esc(fill)}" font-weight="{esc(weight)}">{esc(content)}</text>')


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else [0.0]
    raw = (hi - lo) / max(1, count)
    step = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= step * mult:
            step *= mult
            break
    start = math.ceil(lo / step) * step
    ticks = []
    value = start
    while value <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(value, 12))
        value += step
    return ticks


def line_panel(x0: float, y0: float, width: float, height: float, series: Sequence[tuple[str, str, Sequence[
        tuple[float, float]]]], title: str = "", xlabel: str = "", ylabel: str = "") -> str:
    """A small line chart in the box (x0, y0, width, height): ``series`` is ``(name, colour, [(x, y), ...])``."""
    points = [(x, y) for _, _, pts in series for x, y in pts if math.isfinite(x) and math.isfinite(y)]
    parts = [f'<rect x="{num(x0)}" y="{num(y0)}" width="{num(width)}" height="{num(height)}" fill="#fff" '
             f'stroke="#ddd"/>']
    if title:
        parts.append(text(x0 + width / 2, y0 - 6, title, 12, "middle", weight="bold"))
    if not points:
        parts.append(text(x0 + width / 2, y0 + height / 2, "no data", 11, "middle", "#999"))
        return "".join(parts)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = min(ys), max(ys)
    if xhi == xlo:
        xhi = xlo + 1
    if yhi == ylo:
        yhi, ylo = yhi + 0.5, ylo - 0.5
    pad_l, pad_b = 38, 22
    px, pw, ph = x0 + pad_l, width - pad_l - 8, height - pad_b - 6

    def sx(v: float) -> float:
        return px + (v - xlo) / (xhi - xlo) * pw

    def sy(v: float) -> float:
        return y0 + 6 + ph - (v - ylo) / (yhi - ylo) * ph

    for t in nice_ticks(ylo, yhi, 4):
        parts.append(f'<line x1="{num(px)}" x2="{num(px + pw)}" y1="{num(sy(t))}" y2="{num(sy(t))}" '
                     f'stroke="#eee"/>')
        parts.append(text(px - 4, sy(t) + 3, f"{t:.3g}", 9, "end", "#666"))
    for t in nice_ticks(xlo, xhi, 4):
        parts.append(text(sx(t), y0 + height - 8, f"{t:.4g}", 9, "middle", "#666"))
    for name, colour, pts in series:
        good = [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
        if not good:
            continue
        path = " ".join(f"{num(sx(x), 2)},{num(sy(y), 2)}" for x, y in good)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{esc(colour)}" stroke-width="1.6">'
                     f"<title>{esc(name)}</title></polyline>")
        for x, y in good:
            parts.append(f'<circle cx="{num(sx(x), 2)}" cy="{num(sy(y), 2)}" r="2" fill="{esc(colour)}"/>')
    if ylabel:
        parts.append(text(x0 + 2, y0 + 2, ylabel, 9, "start", "#666"))
    if xlabel:
        parts.append(text(px + pw, y0 + height + 4, xlabel, 9, "end", "#666"))
    return "".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Sanitising


def _clean_value(name: str, value: str) -> str | None:
    if _BAD_VALUE.search(value):
        return None
    for ref in _URL.findall(value):
        if not ref.strip().strip("'\"").startswith("#"):
            return None  # only references inside the document (gradients, clip paths)
    return value


def _local(tag: str) -> str | None:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return name if ns == SVG_NS else None
    return tag


def sanitize_svg(markup: str) -> str:
    """The SVG document ``markup`` reduced to allowed elements and attributes and serialised anew (text escaped).

    Raises ``UnsafeSvg`` when it is not a well-formed ``<svg>`` document, declares a DTD or entities, or is too
    large; elements and attributes outside the allow-list are dropped silently (they are never needed to draw).
    """
    if not isinstance(markup, str):
        raise UnsafeSvg(f"a renderer must return a string, got {type(markup).__name__}")
    if len(markup.encode("utf-8", "replace")) > MAX_SVG_BYTES:
        raise UnsafeSvg(f"the picture is larger than {MAX_SVG_BYTES} bytes")
    if re.search(r"<!DOCTYPE|<!ENTITY", markup, re.IGNORECASE):
        raise UnsafeSvg("DTDs and entities are not allowed in a picture")
    try:
        root = ET.fromstring(markup)
    except ET.ParseError as exc:
        raise UnsafeSvg(f"not well-formed SVG: {exc}") from None
    if _local(root.tag) != "svg":
        raise UnsafeSvg(f"the root element must be <svg>, got <{root.tag}>")
    out: list[str] = []

    def walk(element: ET.Element, top: bool) -> None:
        name = _local(element.tag) if isinstance(element.tag, str) else None
        if name in ALLOWED_TAGS:
            attrs = [f'xmlns="{SVG_NS}"'] if top else []
            for key, value in element.attrib.items():
                if key in ALLOWED_ATTRS and not key.lower().startswith("on"):
                    clean = _clean_value(key, value)
                    if clean is not None:
                        attrs.append(f'{key}="{esc(clean)}"')
            out.append(f"<{name}{' ' if attrs else ''}{' '.join(attrs)}>")
            if element.text:
                out.append(esc(element.text))
            for child in element:
                walk(child, False)
            out.append(f"</{name}>")
        if element.tail and not top:
            out.append(esc(element.tail))

    walk(root, True)
    return "".join(out)
