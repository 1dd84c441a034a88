"""The ``ceuskit`` command line: a thin shell over `ceuskit.api`.

Exit status: 0 success; 2 bad input or usage (one line on stderr saying what
is wrong and how to fix it); 1 internal error (set CEUSKIT_DEBUG=1 for the
traceback).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ceuskit import DISCLAIMER, __version__
from ceuskit.errors import InputError
from ceuskit.linearize import DEFAULT_DYNAMIC_RANGE_DB

if TYPE_CHECKING:
    from ceuskit.pipeline import Analysis


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the whole usage block; the contract wants one line.
        self.exit(2, f"ceuskit: {message} (see '{self.prog} --help')\n")


#: Environment variable: "1" prints every progress message, even off a terminal,
#: with its wall-clock time (``ceuskit: [UNIX SECONDS] message ...``); the
#: stage split of ``benchmarks/analyze_end_to_end.py`` is read from it.
PROGRESS_TIMES_ENV = "CEUSKIT_PROGRESS_TIMES"


def _progress(quiet: bool) -> Callable[[str], None] | None:
    stamped = os.environ.get(PROGRESS_TIMES_ENV) == "1"
    if quiet or not (stamped or sys.stderr.isatty()):
        return None

    def say(message: str) -> None:
        if stamped:
            import time

            print(f"ceuskit: [{time.time():.3f}] {message} ...", file=sys.stderr, flush=True)
        else:
            print(f"ceuskit: {message} ...", file=sys.stderr, flush=True)

    return say


def _say_if_compiling(say: Callable[[str], None] | None) -> None:
    """On a terminal, say that the first run compiles the kernels (instead of sitting silent)."""
    if say is None:
        return
    from ceuskit.compiled import first_run_notice

    notice = first_run_notice()
    if notice is not None:
        say(notice)


def _panel_arg(text: str) -> tuple[int, int, int, int] | None:
    if text == "auto":
        return None
    try:
        x0, y0, x1, y1 = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not auto or X0,Y0,X1,Y1") from None
    return (x0, y0, x1, y1)


def _dynamic_range_arg(text: str) -> float | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is neither a number of dB nor auto") from None


def _clip_start(text: str) -> float:
    """A ``--clip-start-s`` value; a clip's file name there means the option came first."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a start time in s; --clip-start-s takes every value after it, so "
            "give it after the clips (ceuskit analyze CLIP1 CLIP2 ... --clip-start-s 0 120 ...)"
        ) from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite start time in s")
    return v


def _positive(kind: type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not v > 0:
            raise argparse.ArgumentTypeError(f"'{text}' must be positive")
        return v

    return parse


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be 0 or more")
    return v


def _non_negative(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be 0 or more")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ceuskit", description="Quantitative CEUS and venous-mass work-up. "
                + DISCLAIMER)
    p.add_argument("--version", action="version", version=f"ceuskit {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser("demo", help="simulate a venous tumour study, analyse it, write the report")
    d.add_argument("--out", type=Path, default=None,
                   help="output directory (default: ./ceuskit-demo, or -2, -3... if taken)")
    d.add_argument("--seed", type=int, default=0, help="simulation seed (default 0)")
    d.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    d.add_argument("--quiet", action="store_true", help="no progress messages")

    s = sub.add_parser("simulate", help="write a phantom cine with known ground truth")
    s.add_argument("out", type=Path, help="output directory")
    s.add_argument("--scenario", choices=("tumor", "bland"), default="tumor",
                   help="venous tumour with a necrotic core, or bland thrombus (default tumor)")
    s.add_argument("--seed", type=int, default=0,
                   help="seed of every random draw; the same options give the same files (default 0)")
    s.add_argument("--necrosis", type=float, default=0.3,
                   help="necrotic share of the mass, 0..0.9 (default 0.3; tumour only)")
    s.add_argument("--motion", type=float, default=0.0,
                   help="breathing motion amplitude (px, axial; lateral 0.4 of it; period 4 s; default 0)")
    s.add_argument("--drift", type=_non_negative, default=0.0,
                   help="steady probe drift (px/s; default 0)")
    s.add_argument("--out-of-plane", type=_non_negative_int, default=0, metavar="N",
                   help="number of out-of-plane frames at random times (default 0)")
    s.add_argument("--fps", type=_positive(float), default=8.0,
                   help="frame rate (frames/s, 0.5..60; default 8)")
    s.add_argument("--duration", type=_positive(float), default=90.0,
                   help="time of the last frame (s, 1..900; default 90)")
    s.add_argument("--format", choices=("dicom", "mp4", "npz"), default="dicom",
                   help="cine format: DICOM US multi-frame, H.264 MP4 or NumPy archive (default dicom)")
    s.add_argument("--kinetics", default="malignant", metavar="NAME",
                   help="tumour kinetics family: malignant (default), marked-washout, late-washout "
                        "(give --duration 150), synchronous-iso or slow-hypo; ignored for bland")
    s.add_argument("--dynamic-range", type=float, default=60.0, metavar="DB",
                   help="display dynamic range of the log compression (dB, 30..100; default 60), "
                        "recorded in truth.json")
    s.add_argument("--blooming", type=_non_negative, default=0.0, metavar="PX",
                   help="lumen blooming: the lumen's signal spreads into its surroundings as a Gaussian "
                        "of this sigma (px, 0..6; default 0)")
    s.add_argument("--persistence", type=float, default=0.0, metavar="P",
                   help="display persistence (frame averaging, 0..0.9; default 0): each shown frame "
                        "is P x the previous one + (1 - P) x the new one")
    s.add_argument("--smoothing", type=float, default=0.0, metavar="PX",
                   help="Gaussian smoothing of the display after log compression (sigma in px, "
                        "0..3; default 0), as speckle reduction does")
    s.add_argument("--mode", choices=("contrast", "fundamental", "cardiac"), default="contrast",
                   help="contrast (default), fundamental (no contrast: B-mode in both panels) or "
                        "cardiac (fundamental with cardiac-like pulsation)")
    s.add_argument("--layout", default="side-by-side-gap", metavar="NAME",
                   help="dual-display layout: side-by-side-gap (default, with ultrasound regions "
                        "in DICOM/NPZ), side-by-side-nogap, contrast-left-nogap, stacked, "
                        "stacked-nogap, unequal or text-overlay (these without regions)")
    s.add_argument("--tint", default=None, metavar="NAME",
                   help="show the contrast panel through a library colour map (hot, gold, sepia, "
                        "ice), the B-mode panel staying grey; frames become RGB (default: grey)")
    s.add_argument("--clips", default=None, metavar="SPANS",
                   help="write the exam as clips with gaps, e.g. 0-60,90-110,130-150 (s on the exam "
                        "clock): clip-1, clip-2, ... (DICOM clips carry their acquisition times; "
                        "default: one cine)")
    s.add_argument("--colour-bar", action="store_true",
                   help="with --tint: draw the map as a colour bar right of the contrast panel")
    s.add_argument("--overwrite", action="store_true", help="replace files already in OUT")

    a = sub.add_parser("analyze", help="analyse a cine with an ROI file")
    _add_study_options(a, default_out="./<cine name>-ceuskit", clips=True)
    a.add_argument("--no-maps", action="store_true",
                   help="skip the parametric maps (computed by default when there is a lesion ROI; "
                        "written to --out/maps and shown in the report)")
    a.add_argument("--dicom", action="store_true",
                   help="also write DICOM SEG (ROIs, necrosis) and Parametric Maps into --out/dicom "
                        "(DICOM input only)")
    a.add_argument("--fhir", action="store_true",
                   help="also write --out/fhir/bundle.json: a FHIR R4 Bundle (preliminary "
                        "DiagnosticReport + an Observation per parameter and finding), no patient "
                        "identifiers")
    a.add_argument("--fhir-subject", default=None, metavar="REF",
                   help="FHIR reference to the patient for the bundle, e.g. Patient/123 (default: none; "
                        "needs --fhir)")
    a.add_argument("--case", type=Path, default=None, metavar="CASE.yaml",
                   help="clinical case (YAML or JSON; every field optional): the assessment combines it "
                        "with the CEUS findings")
    a.add_argument("--params", type=Path, default=None, metavar="PARAMS.yaml",
                   help="analysis options from a YAML parameter file (keys: see docs/params.md); "
                        "options given on the command line override it")
    a.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    a.add_argument("--quiet", action="store_true", help="no progress messages")

    x = sub.add_parser("assess", help="decision support from a case file, CEUS results, or both")
    x.add_argument("--case", type=Path, default=None, metavar="CASE.yaml",
                   help="clinical case (YAML or JSON)")
    x.add_argument("--results", type=Path, default=None, metavar="results.json",
                   help="results.json of 'ceuskit analyze' (its CEUS findings)")
    x.add_argument("--out", type=Path, default=Path("ceuskit-assessment"), metavar="DIR",
                   help="output directory (default ./ceuskit-assessment)")
    x.add_argument("--overwrite", action="store_true", help="replace an assessment already in --out")

    m = sub.add_parser("map", help="parametric maps inside the ROIs (NPY, NIfTI and PNG)")
    _add_study_options(m, default_out="./<cine name>-maps")
    m.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="where the fits run: a Dask scheduler address (tcp://host:port), 'local' "
                        "(a local Dask cluster), 'none' (this process) or 'auto' (default: this "
                        "process, a local Dask cluster for maps of 262,144 blocks or more)")
    m.add_argument("--no-png", action="store_true", help="write the arrays only (no PNG overlays)")
    m.add_argument("--overwrite", action="store_true", help="replace maps already in --out")
    m.add_argument("--quiet", action="store_true", help="no progress messages")

    b = sub.add_parser("batch", help="a cohort: one analysis per manifest row, isolated and "
                                     "resumable, on Dask when asked")
    b.add_argument("manifest", type=Path, metavar="MANIFEST.csv",
                   help="CSV with columns id,cine,roi[,case][,label][,clip_start_s] (paths "
                        "relative to it; an exam's clips as CLIP1;CLIP2;... in the cine cell, "
                        "their start times in s as S1;S2;... in clip_start_s)")
    b.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="batch directory (a directory of an earlier run is resumed)")
    b.add_argument("--params", type=Path, default=None, metavar="PARAMS.yaml",
                   help="analysis options for every case (YAML; default: analyze's defaults)")
    b.add_argument("--scheduler", default="none", metavar="none|local|tcp://HOST:PORT",
                   help="where cases run: none (from this process, default), local (a Dask "
                        "LocalCluster sized to the machine) or an existing Dask scheduler")
    b.add_argument("--db", default=None, metavar="URL",
                   help="results database (SQLAlchemy URL; default sqlite:///DIR/ceuskit.db)")
    b.add_argument("--jobs", type=_positive(int), default=None, metavar="N",
                   help="cases at a time (none: default 1) or workers (local: default one per core)")
    b.add_argument("--no-report", action="store_true", help="skip cohort.html and cohort.pdf")
    b.add_argument("--quiet", action="store_true", help="no progress messages")

    w = sub.add_parser("serve", help="the web app: upload, draw ROIs, analyse, read the report")
    w.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; any other needs a token)")
    w.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    w.add_argument("--data", type=Path, default=None, metavar="DIR",
                   help="data directory: studies, results, SQLite database (default ./ceuskit-data)")
    w.add_argument("--db", default=None, metavar="URL",
                   help="SQLAlchemy database URL (default sqlite:///DIR/ceuskit.db; PostgreSQL needs "
                        "the 'postgres' extra)")
    w.add_argument("--token", default=None,
                   help="access token (default: none on 127.0.0.1, else generated and printed once)")
    w.add_argument("--max-upload-mb", type=_positive(float), default=2048.0,
                   help="largest accepted upload in MiB (default 2048)")
    w.add_argument("--workers", type=_positive(int), default=2,
                   help="analyses that run at once (default 2)")
    w.add_argument("--allowed-host", action="append", default=None, metavar="NAME",
                   help="a host name the browser may use to reach the app (repeatable; default: the "
                        "--host address, plus this machine's names when listening on all addresses); "
                        "other Host headers are refused (DNS-rebinding guard)")
    w.add_argument("--pacs-config", type=Path, default=None, metavar="FILE",
                   help="DICOM nodes (PACS) to query, retrieve from and send results to (YAML; "
                        "default: DIR/pacs.yaml when it exists; see the README's 'Connecting to a PACS')")
    f = sub.add_parser("fit", help="fit time-intensity curves from a CSV (time in s, one column per ROI)")
    f.add_argument("tic", type=Path, metavar="TIC.csv",
                   help="CSV with a header: first column time in s (time_s, time or t), then one "
                        "column per ROI named by its header")
    f.add_argument("--out", type=Path, required=True, help="output directory (results.json, report.html)")
    f.add_argument("--model", choices=("lognormal", "gamma", "ldrw", "auto"), default="lognormal",
                   help="bolus model; auto picks per curve by AICc (default lognormal)")
    values = f.add_mutually_exclusive_group()
    values.add_argument("--dynamic-range", type=_positive(float), default=None, metavar="DB",
                        help="the values are display values 0..255 on a display of DB dB; "
                             "linearised as cines are")
    values.add_argument("--linear", action="store_true",
                        help="the values are linear echo power already")
    f.add_argument("--overwrite", action="store_true", help="replace results already in --out")

    n = sub.add_parser("dicom", help="DICOM networking: send files to a PACS, receive cines")
    nsub = n.add_subparsers(dest="dicom_command", required=True, parser_class=_Parser,
                            help="send: C-STORE files to a node; listen: receive cines as studies")
    ns = nsub.add_parser("send", help="C-STORE DICOM files (or every DICOM file under a folder) "
                                      "to a DICOM node")
    ns.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="DICOM files or folders")
    ns.add_argument("--to", required=True, metavar="AET@HOST:PORT",
                    help="the receiving node, e.g. ORTHANC@127.0.0.1:4242")
    ns.add_argument("--calling-aet", default=None, metavar="AET",
                    help="our AE title (default CEUSKIT)")
    ns.add_argument("--timeout", type=_positive(float), default=None, metavar="S",
                    help="connection, association and reply timeout in s (default 10)")
    nl = nsub.add_parser("listen", help="a Storage SCP that files received US cines as studies of "
                                        "the web app's store")
    nl.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    nl.add_argument("--data", type=Path, required=True, metavar="DIR",
                    help="the web app's data directory (as for 'ceuskit serve --data')")
    nl.add_argument("--aet", default=None, metavar="AET", help="our AE title (default CEUSKIT)")
    nl.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1; DICOM has no access token: "
                         "listen beyond loopback only on a trusted network)")
    return p


def _add_study_options(p: argparse.ArgumentParser, *, default_out: str, clips: bool = False) -> None:
    """The input and pipeline options `analyze` and `map` share (`clips`: several cines)."""
    if clips:
        p.add_argument("cine", type=Path, nargs="+",
                       help="DICOM, video (MP4/AVI/MOV/MKV) or NPZ cine; several files are the "
                            "clips of one exam (same probe position), analysed on one clock")
        p.add_argument("--clip-start-s", type=_clip_start, nargs="+", default=None, metavar="S",
                       help="with several clips: when each clip starts, in s (one value per clip, "
                            "e.g. 0 120 180, given after the clips; default: from the DICOM "
                            "acquisition times)")
    else:
        p.add_argument("cine", type=Path, help="DICOM, video (MP4/AVI/MOV/MKV) or NPZ cine")
    p.add_argument("--roi", type=Path, required=True, help="ROI file (JSON)")
    p.add_argument("--out", type=Path, default=None, help=f"output directory (default: {default_out})")
    p.add_argument("--dynamic-range", type=_dynamic_range_arg, default=DEFAULT_DYNAMIC_RANGE_DB,
                   metavar="DB|auto",
                   help=f"display dynamic range in dB, or auto to estimate it from the cine's "
                        f"speckle (default {DEFAULT_DYNAMIC_RANGE_DB:g})")
    p.add_argument("--fps", type=_positive(float), default=None,
                   help="frame rate, for files without timing (frames/s)")
    p.add_argument("--panel", type=_panel_arg, default=None,
                   help="contrast panel: auto (default) or X0,Y0,X1,Y1 in frame pixels")
    p.add_argument("--model", choices=("lognormal", "gamma", "ldrw", "auto"), default="lognormal",
                   help="bolus model (default lognormal; auto picks per curve by AICc)")
    p.add_argument("--motion", choices=("off", "auto", "translation", "rigid"), default="auto",
                   help="motion compensation (default auto: translation, tracked on the B-mode "
                        "panel, or on the contrast panel when there is none)")
    p.add_argument("--reference-frame", type=_non_negative_int, default=None, metavar="N",
                   help="frame (from 0) that motion is measured against: the frame the ROIs were "
                        "drawn on (default: chosen automatically and reported)")
    p.add_argument("--injection-time", type=float, default=0.0, metavar="S",
                   help="when the contrast was injected, in s on the cine clock (default 0: the "
                        "recording starts with the injection; negative if it started later); wash-out "
                        "timing and degree count from it")
    p.add_argument("--colour-map", default="auto", metavar="auto|off|NAME|FILE",
                   help="how a contrast panel exported through a colour map (a tint) is turned "
                        "back into display values: auto (default: from its colour bar and the "
                        "library tints), off (refuse colour panels), a library tint (hot, gold, "
                        "sepia, ice) or a file of 256 rows of R, G, B")
    p.add_argument("--block", type=_block_arg, default=None, metavar="N",
                   help="parametric maps' block size in pixels: each N x N block's mean linear power "
                        "is fitted (default 4: about one resolution cell, so that speckle does not "
                        "dominate a pixel's curve; 1 = every pixel)")


def _block_arg(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of pixels") from None
    if not 1 <= v <= 64:
        raise argparse.ArgumentTypeError(f"'{text}' must be between 1 and 64 pixels")
    return v


def _free_dir(base: Path) -> Path:
    if not base.exists():
        return base
    for i in range(2, 10_000):
        cand = base.with_name(f"{base.name}-{i}")
        if not cand.exists():
            return cand
    raise InputError(base, "no free output directory name", "pass --out")


#: ``analyze`` option destinations and the parameter-file keys they set (`ceuskit.params`).
_PARAM_DESTS = {"dynamic_range": "dynamic_range_db", "fps": "fps", "panel": "panel", "model": "model",
                "motion": "motion", "reference_frame": "reference_frame",
                "injection_time": "injection_time_s", "block": "block_px", "no_maps": "maps",
                "colour_map": "colour_map",
                "dicom": "dicom", "fhir": "fhir"}


def _explicit_options(argv: Sequence[str], command: str = "analyze") -> set[str]:
    """The destinations of the `command`'s options the user typed (abbreviations included)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[command]._actions:
        action.default = argparse.SUPPRESS  # so that only what was typed lands in the namespace
    return set(vars(parser.parse_args(list(argv))))


def _analysis_parameters(args: argparse.Namespace) -> Any:
    """The effective `Parameters`: the file's (``--params``), then the options given explicitly."""
    from dataclasses import replace

    from ceuskit.params import Parameters, load_params

    from_cli = {"dynamic_range_db": args.dynamic_range, "fps": args.fps, "panel": args.panel,
                "model": args.model, "motion": args.motion, "reference_frame": args.reference_frame,
                "injection_time_s": args.injection_time, "block_px": args.block,
                "maps": not args.no_maps, "dicom": args.dicom, "fhir": args.fhir,
                "colour_map": args.colour_map}
    if args.params is None:
        return Parameters(**from_cli)
    params = load_params(args.params)
    typed = _explicit_options(getattr(args, "argv", ()))
    given = {key: from_cli[key] for dest, key in _PARAM_DESTS.items() if dest in typed}
    return replace(params, **given)


def cmd_analyze(args: argparse.Namespace) -> int:
    from ceuskit.api import analyze_to_dir

    params = _analysis_parameters(args)
    options = params.analysis_options()
    if (options.dynamic_range_source == "default"
            and "dynamic_range" in _explicit_options(getattr(args, "argv", ()))):
        from dataclasses import replace

        # --dynamic-range 60 typed is the scanner's setting, given: exact, not the default.
        options = replace(options, dynamic_range_source="user")
    cines = list(args.cine)
    out = args.out or Path(f"{cines[0].stem}-ceuskit")
    if args.fhir_subject is not None and not params.fhir:
        raise InputError("--fhir-subject", "names the patient of a FHIR bundle, but --fhir was not given",
                         "add --fhir, or drop --fhir-subject")
    case = None
    if args.case is not None:
        from ceuskit.clinical.case import load_case

        case = load_case(args.case)  # checked before the long work
    say = _progress(args.quiet)
    _say_if_compiling(say)
    analysis, paths = analyze_to_dir(cines[0] if len(cines) == 1 else cines, args.roi, out,
                                     options, overwrite=args.overwrite, progress=say, case=case,
                                     dicom=params.dicom, fhir=params.fhir,
                                     fhir_subject=args.fhir_subject, pdf=params.pdf,
                                     clip_starts_s=args.clip_start_s)
    results = json.loads(paths["results"].read_text(encoding="utf-8"))
    print(finding_line(results))
    print(DISCLAIMER)
    _print_outputs(analysis, paths)
    return 0


def finding_line(results: dict[str, Any]) -> str:
    """One line: does the lesion enhance (or why that cannot be told), and the level of suspicion."""
    f = results.get("findings") or {}
    a = results.get("assessment") or {}
    value = f.get("intraluminal_enhancement")
    if value is True:
        what = "the lesion enhances on CEUS (tumour in vein rather than bland thrombus)"
    elif value is False:
        what = "the lesion does not enhance on CEUS (bland-thrombus pattern)"
    elif f.get("lesion_roi") is None:
        what = "no lesion ROI: nothing to assess"
    else:
        why = str((f.get("not_assessable") or {}).get("intraluminal_enhancement") or "")
        what = "whether the lesion enhances cannot be assessed: " + why.removeprefix("not assessable: ")
    return f"finding: {what}; level of suspicion of a venous neoplasm: {a.get('level', 'not assessed')}"


def cmd_assess(args: argparse.Namespace) -> int:
    from ceuskit.api import assess_to_dir

    doc, paths = assess_to_dir(args.out, case_path=args.case, results_path=args.results,
                               overwrite=args.overwrite)
    a = doc["assessment"]
    print(f"level of suspicion of a venous neoplasm: {a['level']} "
          f"(suspect neoplasm: {'yes' if a['suspect_neoplasm'] else 'no'})")
    print(a["summary"])
    print(f"assessment: {paths['json'].resolve()}")
    if "pdf" in paths:
        print(f"report (PDF): {paths['pdf'].resolve()}")
    for w in doc.get("warnings", []):
        print(f"ceuskit: warning: {w['message']}", file=sys.stderr)
    print(f"report: {paths['html'].resolve()}")
    return 0


def _print_outputs(analysis: Analysis, paths: dict[str, Path]) -> None:
    """The written files' paths; the HTML report's last (scripts read the last line)."""
    print(f"results: {paths['results'].resolve()}")
    if "maps" in paths:
        print(f"maps: {paths['maps'].resolve()}")
    if "pdf" in paths:
        print(f"report (PDF): {paths['pdf'].resolve()}")
    if "dicom" in paths:
        print(f"dicom: {paths['dicom'].resolve()}")
    if "fhir" in paths:
        print(f"fhir: {paths['fhir'].resolve()}")
    for w in analysis.warnings:
        if w.code in ("pdf-not-written", "dicom-seg-only"):
            print(f"ceuskit: warning: {w.message}", file=sys.stderr)
    print(f"report: {paths['report'].resolve()}")


def cmd_map(args: argparse.Namespace) -> int:
    from ceuskit.api import map_to_dir
    from ceuskit.maps import BLOCK_PX, MapOptions
    from ceuskit.pipeline import AnalysisOptions

    auto = args.dynamic_range == "auto"
    options = AnalysisOptions(dynamic_range_db=DEFAULT_DYNAMIC_RANGE_DB if auto
                              else args.dynamic_range,
                              dynamic_range_source="auto" if auto else (
                                  "user" if "dynamic_range" in _explicit_options(
                                      getattr(args, "argv", ()), "map") else None),
                              fps=args.fps,
                              panel=args.panel, model=args.model, motion=args.motion,
                              reference_frame=args.reference_frame,
                              injection_time_s=args.injection_time, colour_map=args.colour_map)
    map_options = MapOptions(block_px=args.block or BLOCK_PX, model=args.model)
    out = args.out or Path(f"{args.cine.stem}-maps")
    say = _progress(args.quiet)
    _say_if_compiling(say)
    study, paths = map_to_dir(args.cine, args.roi, out, options, map_options,
                              overwrite=args.overwrite, progress=say,
                              scheduler=args.scheduler, png=not args.no_png)
    res = study.result
    print(f"ceuskit map: {res.n_curves} block curves ({res.options.block_px} x "
          f"{res.options.block_px} px), fits ran {study.scheduler_used}")
    for name, roi in res.rois.items():
        line = f"  {name:<10} ({roi['role']}): {roi['enhancing_px']} of {roi['tested_px']} px enhancing"
        if roi["necrosis_fraction"] is not None:
            line += f", necrosis {100 * roi['necrosis_fraction']:.1f} %"
        het = roi["heterogeneity"]
        if het["index"] is not None:
            line += f", heterogeneity index {het['index']:.2f}"
        if het["heterogeneous"] is not None:
            line += " (heterogeneous)" if het["heterogeneous"] else " (homogeneous)"
        if roi["dvp"]["roi_class"]:
            line += f", DVP {roi['dvp']['roi_class']}"
        print(line)
    print(DISCLAIMER)
    print(f"maps: {paths['maps.json'].parent.resolve()}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from ceuskit.simulate import SimulationSpec, simulate, write_phantom

    try:
        spec = SimulationSpec(scenario=args.scenario, seed=args.seed, necrosis=args.necrosis,
                              motion_px=args.motion, fps=args.fps, duration_s=args.duration,
                              drift_px_per_s=args.drift, out_of_plane_frames=args.out_of_plane,
                              kinetics=args.kinetics, blooming_px=args.blooming, mode=args.mode,
                              dynamic_range_db=args.dynamic_range, persistence=args.persistence,
                              smoothing_px=args.smoothing)
    except ValueError as exc:
        raise InputError("ceuskit simulate", str(exc), "see 'ceuskit simulate --help'") from None
    if args.colour_bar and args.tint is None:
        raise InputError("--colour-bar", "needs --tint", "add --tint hot (or another tint)")

    def tinted(phantom: Any) -> Any:
        if args.tint is None:
            return phantom
        from ceuskit.colour_maps import TINTS
        from ceuskit.simulate_tints import with_tint

        if args.tint not in TINTS:
            raise InputError("--tint", f"{args.tint!r} is not a library tint",
                             f"use one of {', '.join(sorted(TINTS))}")
        try:
            return with_tint(phantom, args.tint, colour_bar=args.colour_bar)
        except ValueError as exc:
            raise InputError("--colour-bar", str(exc), "choose another --layout") from None

    if args.clips is not None:
        from ceuskit.simulate_clips import parse_spans, write_clips

        if args.layout != "side-by-side-gap":
            raise InputError("--clips", "is written in the default layout only",
                             "drop --layout, or --clips")
        try:
            spans = parse_spans(args.clips)
        except ValueError as exc:
            raise InputError("--clips", str(exc), "give START-END spans in s, e.g. 0-60,90-120"
                             ) from None
        if spans[-1][1] > spec.duration_s:
            # Before the simulation: nothing is written.
            raise InputError("--clips", f"the last clip ends at {spans[-1][1]:g} s, after the "
                             f"simulated cine's {spec.duration_s:g} s",
                             f"add --duration {spans[-1][1]:g} (or shorten the clips)")
        try:
            paths = write_clips(tinted(simulate(spec)), args.out, spans, args.format,
                                overwrite=args.overwrite)
        except ValueError as exc:
            raise InputError("--clips", str(exc), "give START-END spans in s, e.g. 0-60,90-120"
                             ) from None
    elif args.layout == "side-by-side-gap":
        paths = write_phantom(tinted(simulate(spec)), args.out, args.format,
                              overwrite=args.overwrite)
    else:
        from ceuskit.simulate_layouts import LAYOUTS, with_layout, write_layout_phantom

        if args.layout not in LAYOUTS:
            raise InputError("ceuskit simulate", f"layout (--layout) must be one of "
                             f"{', '.join(LAYOUTS)}, got {args.layout!r}",
                             "see 'ceuskit simulate --help'")
        paths = write_layout_phantom(tinted(with_layout(simulate(spec), args.layout)), args.out,
                                     args.format, overwrite=args.overwrite)
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ceuskit.api import RESULT_FILES, analyze_to_dir
    from ceuskit.outputs import check_out_dir
    from ceuskit.simulate import SimulationSpec, simulate, write_phantom

    say = _progress(args.quiet)
    out = args.out if args.out is not None else _free_dir(Path("ceuskit-demo"))
    check_out_dir(out, (*RESULT_FILES, "phantom"), overwrite=args.overwrite)
    _say_if_compiling(say)
    if say:
        say("simulating a venous tumour with a necrotic core (ground truth in phantom/)")
    phantom = simulate(SimulationSpec(scenario="tumor", seed=args.seed))
    files = write_phantom(phantom, out / "phantom", "dicom", overwrite=args.overwrite)
    from ceuskit.clinical.case import example_case

    # The index case of the clinical reference: a leiomyosarcoma of the
    # external iliac vein treated as DVT for two years.
    analysis, paths = analyze_to_dir(files["cine"], files["rois"], out, overwrite=args.overwrite,
                                     progress=say, case=example_case("index_case"))
    truth = phantom.truth.get("rois", {})
    print("ceuskit demo: simulated venous tumour, analysed from its DICOM cine")
    for r in analysis.rois:
        ttp = r.perfusion.get("time_to_peak_s")
        true_ttp = truth.get(r.roi.name, {}).get("perfusion", {}).get("time_to_peak_s")
        state = "enhancing" if r.enhancing else "not enhancing"
        line = f"  {r.roi.name:<8} ({r.roi.role}): {state}"
        if ttp is not None:
            line += f", time to peak {ttp:.1f} s"
            if true_ttp is not None:
                line += f" (truth {true_ttp:.1f} s)"
        nec = (r.necrosis or {}).get("necrosis_fraction")
        if nec is not None:
            line += f", necrosis {100 * nec:.0f} %"
            true_nec = truth.get(r.roi.name, {}).get("necrosis_fraction")
            if true_nec is not None:
                line += f" (truth {100 * true_nec:.0f} %)"
        print(line)
    # As written (building the document again would redo findings and assessment).
    assessment = json.loads(paths["results"].read_text(encoding="utf-8"))["assessment"]
    from ceuskit.clinical.rules import reason_groups

    n_reasons = len(reason_groups(assessment["red_flags"]))
    print(f"  with the index case's clinical picture: level of suspicion of a venous neoplasm "
          f"{assessment['level']}, {n_reasons} reason{'' if n_reasons == 1 else 's'} "
          "(the CEUS findings count as one)")
    print(DISCLAIMER)
    _print_outputs(analysis, paths)
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from ceuskit.batch import run_batch

    say = _progress(args.quiet)
    result = run_batch(args.manifest, args.out, params_path=args.params, scheduler=args.scheduler,
                       db_url=args.db, jobs=None if args.jobs is None else int(args.jobs),
                       report=not args.no_report, progress=say)
    n = len(result.records)
    print(f"{n} cases: {n - result.n_failed} ok, {result.n_failed} failed or timed out; "
          f"{len(result.ran)} run, {len(result.skipped)} unchanged and kept")
    for cid, rec in result.records.items():
        if rec.get("status") != "ok":
            print(f"  {cid}: {rec.get('status')}: {rec.get('error')}")
    for name, path in result.paths.items():
        print(f"{name}: {path}")
    print(DISCLAIMER)
    # Scripts tell "every case analysed" from "finished, some cases failed" (not an input error).
    return 0 if result.n_failed == 0 else 3


def cmd_serve(args: argparse.Namespace) -> int:
    from ceuskit.web.server import serve

    return serve(args.host, args.port, args.data, db_url=args.db, token=args.token,
                 max_upload_mb=args.max_upload_mb, workers=int(args.workers),
                 allowed_hosts=args.allowed_host, pacs_config=args.pacs_config)


def cmd_fit(args: argparse.Namespace) -> int:
    from ceuskit.api import fit_tic_to_dir

    if args.dynamic_range is None and not args.linear:
        raise InputError("ceuskit fit", "say what the values are",
                         "pass --linear (linear echo power) or --dynamic-range DB (display values 0..255)")
    doc, paths = fit_tic_to_dir(args.tic, args.out, model=args.model,
                                dynamic_range_db=args.dynamic_range, linear=args.linear,
                                overwrite=args.overwrite)
    fitted = sum(1 for r in doc["rois"].values() if r["fit"] is not None)
    print(f"{fitted} of {len(doc['rois'])} curve(s) fitted")
    print(DISCLAIMER)
    for p in paths.values():
        print(p)
    return 0


def cmd_dicom(args: argparse.Namespace) -> int:
    from ceuskit.io import dicom_net

    if args.dicom_command == "send":
        node = dicom_net.parse_node(args.to, calling_aet=args.calling_aet or dicom_net.CALLING_AET,
                                    timeout_s=args.timeout or dicom_net.DEFAULT_TIMEOUT_S)
        files = dicom_net.dicom_files(args.paths)

        def report(r: dicom_net.SendResult) -> None:
            print(f"{r.path}: {'ok' if r.ok else 'FAILED'}: {r.message}", flush=True)

        results = dicom_net.send_files(files, node, progress=report)
        failed = sum(not r.ok for r in results)
        print(f"ceuskit dicom send: {len(results) - failed} of {len(results)} files stored on {node}")
        if failed:
            print(f"ceuskit: error: {failed} of {len(results)} files were not stored on {node} (see the "
                  "lines above)", file=sys.stderr)
            return 2
        return 0
    from ceuskit.web.listen import listen

    return listen(args.data, args.port, aet=args.aet or dicom_net.CALLING_AET, host=args.host)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
    except SystemExit as exc:  # usage errors (2) and --help/--version (0) end here
        return exc.code if isinstance(exc.code, int) else 0
    handlers = {"analyze": cmd_analyze, "simulate": cmd_simulate, "demo": cmd_demo, "map": cmd_map,
                "serve": cmd_serve, "assess": cmd_assess, "dicom": cmd_dicom,
                "batch": cmd_batch, "fit": cmd_fit}
    try:
        return handlers[args.command](args)
    except InputError as exc:
        print(f"ceuskit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ceuskit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): the work is done and the
        # files are written; stop writing to the closed pipe without a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:  # an internal error: say so plainly, exit 1
        if os.environ.get("CEUSKIT_DEBUG"):
            raise
        print(f"ceuskit: internal error: {type(exc).__name__}: {exc} "
              "(please report it with the command that caused it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
