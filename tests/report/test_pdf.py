"""The PDF's figures: PNG data URLs printed as JPEG with the same pixels (within JPEG's error)."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image

from ceuskit.report.pdf import print_images


def _data_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def test_png_figures_become_jpeg_with_the_same_pixels():
    rng = np.random.default_rng(3)
    # A map-like figure: smooth colour field, sharp region edges, a transparent margin.
    y, x = np.mgrid[0:120, 0:160]
    rgba = np.zeros((120, 160, 4), dtype=np.uint8)
    rgba[..., 0] = (x * 255 // 159).astype(np.uint8)
    rgba[..., 1] = np.where((x - 80) ** 2 + (y - 60) ** 2 < 900, 200, 40).astype(np.uint8)
    rgba[..., 2] = (y * 2).astype(np.uint8)
    rgba[..., 3] = 255
    rgba[:10, :, 3] = 0
    grey = Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8), mode="L")
    html = (f'<p><img src="{_data_url(Image.fromarray(rgba, mode="RGBA"))}"></p>'
            f'<img alt="x" src="{_data_url(grey)}"><img src="data:image/svg+xml;base64,PHN2Zy8+">')
    out = print_images(html)
    urls = re.findall(r'src="data:image/(\w+\+?\w*);base64,([^"]+)"', out)
    assert [kind for kind, _ in urls] == ["jpeg", "jpeg", "svg+xml"]
    assert '<img alt="x" src="data:image/jpeg' in out  # the rest of the markup is kept
    printed = np.asarray(Image.open(io.BytesIO(base64.b64decode(urls[0][1]))).convert("RGB"),
                         dtype=float)
    expected = rgba[..., :3].astype(float)
    expected[:10] = 255.0  # transparent pixels are printed on white paper
    assert printed.shape == expected.shape
    assert np.mean(np.abs(printed - expected)) < 2.0
    # Full-resolution colour: the region edge stays within a pixel or two.
    edge = np.abs(printed[60, :, 1] - expected[60, :, 1])
    assert np.percentile(edge, 95) < 25.0
