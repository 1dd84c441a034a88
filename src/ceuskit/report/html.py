"""The self-contained HTML report (Jinja2 template, figures embedded as PNG)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ceuskit import DISCLAIMER
from ceuskit.fmt import fmt
from ceuskit.pipeline import Analysis
from ceuskit.report.content import PARAMETER_LABELS, report_content
from ceuskit.report.figures import motion_png, roi_frame, roi_overlay_png, tic_png

__all__ = ["PARAMETER_LABELS", "render_assessment_html", "render_content_html", "render_html",
           "render_web_content"]

_env = Environment(
    loader=PackageLoader("ceuskit.report", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _fmt(value: Any, unit: str | None = None, sig: int = 3) -> str:
    """The report's one number format (`ceuskit.fmt.fmt`): significant figures, no exponent."""
    return fmt(value, unit, sig)


_env.filters["fmt"] = _fmt


def _b64(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _css_string(text: str) -> Markup:
    """``text`` as a quoted CSS string, safe inside a <style> element."""
    escaped = (text.replace("\\", "\\5C ").replace('"', "\\22 ").replace("<", "\\3C ")
               .replace("\n", " "))
    return Markup(f'"{escaped}"')


def _maps_context(analysis: Analysis, results: dict[str, Any]) -> dict[str, Any] | None:
    """What the "Parametric maps" section shows (None without maps)."""
    study = analysis.maps
    if study is None:
        return None
    from ceuskit.maps import DVP_CLASSES, MAP_UNITS
    from ceuskit.maps_io import TITLES
    from ceuskit.report.figures import REPORT_MAPS, map_images

    images = map_images(study, analysis.source_name, REPORT_MAPS)  # shared with maps/
    captions = {
        "peak_enhancement": "Peak enhancement of each block's fitted curve (linear echo power, a.u.)",
        "time_to_peak_s": "Time to peak of each block's fitted curve (s, cine clock)",
        "necrosis": "Necrosis mask: lesion pixels that fail the pixel enhancement test (red) and "
                    "those that pass (blue)",
    }

    def caption(name: str) -> str:
        text = captions.get(name, TITLES[name])
        statement = images[name].scale.get("statement")
        # The template ends the caption with its own full stop.
        return (f"{text}. {statement}" if statement else text).rstrip(".")

    figures = [{"name": n, "title": TITLES[n], "unit": MAP_UNITS.get(n, ""),
                "caption": caption(n), "src": _b64(image.png)} for n, image in images.items()]
    rois = []
    for r in analysis.rois:
        summary = results["rois"].get(r.roi.name, {}).get("map")
        if summary is not None:
            rois.append({"name": r.roi.name, "role": r.roi.role, "m": summary})
    has_dvp = any(x["m"]["dvp"]["pixel_shares"] is not None for x in rois)
    return {"figures": figures, "rois": rois, "info": results["maps"],
            "dvp_classes": [*DVP_CLASSES, "not-available"] if has_dvp else None}


def render_content_html(results: dict[str, Any], *, fig: dict[str, Any] | None = None,
                        web: bool = False) -> str:
    """The report's content (`ceuskit.report.content`) as one HTML fragment.

    Parameters
    ----------
    results : dict
        A results.json document.
    fig : dict, optional
        Figures: ``tic``, ``roi``, ``motion`` (PNG data URLs), ``roi_caption``,
        ``maps`` (list of name, title, unit, caption, src and, on the web, href).
    web : bool
        The web app's results page: plotly draws the curves (and the motion)
        into the fragment's ``#tic-plot`` / ``#motion-plot``; maps open large
        on a click.

    Returns
    -------
    str
        The fragment (a ``<div class="cx-report">`` preceded by its styles).
    """
    content = report_content(results)
    styles = _env.get_template("_content.css").render()
    body = _env.get_template("_content.html").render(c=content, fig=fig or {"maps": []}, web=web)
    return f"<style>\n{styles}</style>\n{body}"


def render_web_content(results: dict[str, Any], files_url: str, files: list[str] | None = None) -> str:
    """The web app's results section: the report's content for a stored analysis.

    Parameters
    ----------
    results : dict
        The analysis' results.json.
    files_url : str
        URL prefix of the analysis' files (``/api/analyses/<id>/files/``).
    files : list of str, optional
        The analysis' file names; the map overlays among them (``maps/*.png``)
        are shown, the report's three first, each a link to the full-size image.

    Returns
    -------
    str
        `render_content_html` with ``web=True``: plotly draws the curves into
        ``#tic-plot`` (and the motion, when it matters, into ``#motion-plot``).
    """
    from ceuskit.maps_io import TITLES
    from ceuskit.report.figures import REPORT_MAPS

    units = dict(_mapping(_mapping(results.get("maps")).get("units")))
    pngs = [f for f in (files if files is not None else _mapping(results.get("maps")).get("files") or [])
            if f.startswith("maps/") and f.endswith(".png")]
    first = [f"maps/{n}.png" for n in REPORT_MAPS if f"maps/{n}.png" in pngs]
    ordered = first + [f for f in pngs if f not in first]
    maps = []
    for f in ordered:
        name = f.removeprefix("maps/").removesuffix(".png")
        title = TITLES.get(name, name.replace("_", " "))
        unit = units.get(name, "")
        maps.append({"name": name, "title": title, "unit": unit if unit not in ("1", "") else "",
                     "caption": "overlay over the frame the maps were drawn on; click to enlarge",
                     "src": files_url + quote(f), "href": files_url + quote(f)})
    return render_content_html(results, fig={"maps": maps}, web=True)


def _mapping(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def render_html(
    analysis: Analysis,
    results: dict[str, Any] | None = None,
    *,
    findings: dict[str, Any] | None = None,
    assessment: dict[str, Any] | None = None,
    summary: str | None = None,
) -> str:
    """Render the report for an analysis.

    Parameters
    ----------
    analysis : Analysis
    results : dict, optional
        The results.json document (built from `analysis` when omitted).
    findings, assessment : dict, optional
        The CEUS findings and the decision-support assessment; taken from
        ``results`` (``findings`` / ``assessment``) when not given.
    summary : str, optional
        Kept for callers of the older signature: the report now shows the
        answer box and short sentences (`ceuskit.report.content`) instead of
        one summary paragraph; a summary given here is stored as the
        assessment's ``summary``.

    Returns
    -------
    str
        One self-contained HTML page (the PDF is printed from it): the
        answer, the lesion's curves and key numbers, the findings in words,
        the clinical picture, the details and an appendix of statistics
        (`render_content_html`), with the figures embedded.
    """
    results = dict(results if results is not None else analysis.results())
    if assessment is not None:
        results["assessment"] = {**assessment, **({"summary": summary} if summary else {})}
        if findings is not None:
            results["findings"] = findings
    content = report_content(results)
    index, _, _, why = roi_frame(analysis)
    t_roi = float(analysis.times_s[index])
    fig: dict[str, Any] = {
        "tic": _b64(tic_png(analysis)),
        "roi": _b64(roi_overlay_png(analysis)),
        "roi_caption": (f"The ROIs on frame {index} (t = {fmt(t_roi, 's')}), the frame whose "
                        f"coordinates they are measured in: {why}."),
        "motion": None,
        "maps": [],
    }
    if content["motion"]["matters"]:
        motion = motion_png(analysis)
        fig["motion"] = _b64(motion) if motion is not None else None
    maps = _maps_context(analysis, results)
    if maps is not None:
        fig["maps"] = maps["figures"]
    template = _env.get_template("report.html")
    return template.render(
        a=analysis,
        res=results,
        content=render_content_html_from(content, fig),
        disclaimer=DISCLAIMER,
        disclaimer_css=_css_string("Decision support, not a diagnosis. " + DISCLAIMER),
    )


def render_content_html_from(content: dict[str, Any], fig: dict[str, Any], *, web: bool = False) -> Markup:
    """`render_content_html` for content already built (the report page's body)."""
    return Markup(_env.get_template("_content.html").render(c=content, fig=fig, web=web))


def render_assessment_html(document: dict[str, Any], *, source: str | None = None) -> str:
    """Render a stand-alone assessment page (``ceuskit assess``).

    Parameters
    ----------
    document : dict
        Has ``assessment`` and ``findings`` (None without CEUS), as made by
        `ceuskit.pipeline.with_assessment` or `ceuskit.api.assess_case`.
    source : str, optional
        Name of the results.json the findings came from.

    Returns
    -------
    str
        One self-contained HTML page.
    """
    from ceuskit import __version__

    assessment = document["assessment"]
    return _env.get_template("assessment.html").render(
        assessment=assessment,
        findings=document.get("findings"),
        summary=assessment.get("summary"),
        disclaimer=DISCLAIMER,
        disclaimer_css=_css_string("Decision support, not a diagnosis. " + DISCLAIMER),
        version=__version__,
        inputs=", ".join(assessment.get("inputs_used") or []) or "none",
        source=source,
    )
