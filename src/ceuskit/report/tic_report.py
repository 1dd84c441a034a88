"""report.html of ``ceuskit fit``: the fitted curves and the parameter table."""

from __future__ import annotations

import base64
import html
from typing import Any

import numpy as np

from ceuskit import DISCLAIMER
from ceuskit.fmt import fmt
from ceuskit.report.content import _PARAMETER_UNITS as PARAMETER_UNITS
from ceuskit.report.content import PARAMETER_LABELS


def curves_png(doc: dict[str, Any]) -> bytes:
    """Measured (dots) and fitted (lines) curves of every ROI of a ``ceuskit fit`` results document."""
    from ceuskit.report.figures import _png, plt

    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for k, (name, roi) in enumerate(doc["rois"].items()):
        colour = f"C{k % 10}"
        tic = roi["tic"]
        t = np.array(tic["times_s"], dtype=float)
        y = np.array([np.nan if v is None else v for v in tic["intensity"]], dtype=float)
        ax.plot(t, y, ".", ms=3, color=colour, alpha=0.6, label=f"{name} (measured)")
        if tic.get("fitted") is not None:
            f = np.array([np.nan if v is None else v for v in tic["fitted"]], dtype=float)
            ax.plot(t, f, "-", lw=1.6, color=colour, label=f"{name} ({roi['model']} fit)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("linear echo power (a.u.)")
    ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)
    return _png(fig)


def render_fit_html(doc: dict[str, Any]) -> str:
    """A self-contained report.html for a ``ceuskit fit`` results document (every value escaped)."""
    e = html.escape
    names = list(doc["rois"])
    png = base64.b64encode(curves_png(doc)).decode("ascii")
    head = "".join(f"<th>{e(n)}</th>" for n in names)
    rows = []
    for key, label in PARAMETER_LABELS.items():
        cells = "".join(f"<td>{e(fmt(doc['rois'][n]['perfusion'].get(key)))}</td>" for n in names)
        rows.append(f"<tr><th>{e(label)}</th><td>{e(PARAMETER_UNITS.get(key, ''))}</td>{cells}</tr>")
    models = "".join(f"<td>{e(str(doc['rois'][n]['model']))}</td>" for n in names)
    rows.insert(0, f"<tr><th>Model</th><td></td>{models}</tr>")
    src = doc["input"]
    values = ("linear echo power" if src["values"] == "linear" else
              f"display values 0..255, linearised with a {src['dynamic_range_db']:g} dB dynamic range "
              f"({e(src['linearization'])})")
    warnings = "".join(f"<li>{e(w['message'])}</li>" for w in doc.get("warnings", []))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>ceuskit fit: {e(src['file'])}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:1em auto;}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}}
.disclaimer{{background:#fff4e0;padding:.5em;border:1px solid #e0b060}}</style></head>
<body>
<h1>Fitted time-intensity curves</h1>
<p class="disclaimer">{e(DISCLAIMER)}</p>
<p>Input: {e(src['file'])}; {src['n_samples']} samples from {src['t_first_s']:g} s to {src['t_last_s']:g} s,
{len(names)} curve(s); values: {values}. Fitted with the engine of <code>ceuskit analyze</code>
(model setting: {e(str(doc['analysis']['model']))}).</p>
{f'<h2>Warnings</h2><ul>{warnings}</ul>' if warnings else ''}
<h2>Curves</h2>
<img alt="measured and fitted curves" src="data:image/png;base64,{png}" style="max-width:100%">
<h2>Parameters</h2>
<table><tr><th>Parameter</th><th>Unit</th>{head}</tr>
{''.join(rows)}
</table>
<p>Curves that do not pass the enhancement test are not fitted (their parameters are empty).</p>
</body></html>
"""
