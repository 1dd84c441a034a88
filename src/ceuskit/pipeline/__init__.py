"""The analysis pipeline: cine file + ROI file -> quantified curves, maps and results.json.

A package of one module per job, in data-flow order:

- `ceuskit.pipeline.values`: the options and the values passed forward
  (`AnalysisOptions`, `RoiResult`, `Analysis`, `MapStudy`);
- `ceuskit.pipeline.power`: the contrast panel's linear power, streamed a
  chunk at a time (linearised and motion-aligned) for every pass;
- `ceuskit.pipeline.measure`: ROI curves, the enhancement test, fits,
  verdicts, necrosis and the viable part;
- `ceuskit.pipeline.stages`: the order of the stages (`analyze`,
  `analyze_cine`, `prepare_cine`, motion, dynamic range, colour, maps);
- `ceuskit.pipeline.results`: the results.json document.

The CLI, the web app and the batch runner call the names re-exported here.
"""

from ceuskit.pipeline.measure import (
    ENHANCEMENT_TEST_TEXT,
    VIABLE_MIN_PX,
    enhancement_dict,
    fit_enhancing,
    measure_rois,
    with_map_necrosis,
    with_viable_part,
)
from ceuskit.pipeline.power import (
    ALIGNED_CACHE_BYTES,
    POWER_CHUNK_FRAMES,
    coded_power_chunks,
    contrast_power_chunks,
    mask_curves,
)
from ceuskit.pipeline.results import (
    assessment_sections,
    build_results,
    dynamic_range_check_record,
    json_array,
    speckle_check_records,
    with_assessment,
)
from ceuskit.pipeline.stages import (
    analyze,
    analyze_cine,
    decolour_cine,
    dynamic_range_disagreement,
    estimate_cine_motion,
    load_clips,
    map_prepared,
    prepare_cine,
    resolve_dynamic_range,
)
from ceuskit.pipeline.values import (
    AUTO_MODELS,
    DIFFERENCE_KEYS,
    DYNAMIC_RANGE_SOURCES,
    MAX_COLOUR_SHARE,
    MOTION_CHOICES,
    PERFUSION_KEYS,
    RATIO_KEYS,
    SUPPORTED_MODELS,
    Analysis,
    AnalysisOptions,
    MapStudy,
    Progress,
    RoiResult,
)

__all__ = [
    "ALIGNED_CACHE_BYTES",
    "AUTO_MODELS",
    "DIFFERENCE_KEYS",
    "DYNAMIC_RANGE_SOURCES",
    "ENHANCEMENT_TEST_TEXT",
    "MAX_COLOUR_SHARE",
    "MOTION_CHOICES",
    "PERFUSION_KEYS",
    "POWER_CHUNK_FRAMES",
    "RATIO_KEYS",
    "SUPPORTED_MODELS",
    "VIABLE_MIN_PX",
    "Analysis",
    "AnalysisOptions",
    "MapStudy",
    "Progress",
    "RoiResult",
    "analyze",
    "analyze_cine",
    "assessment_sections",
    "build_results",
    "coded_power_chunks",
    "contrast_power_chunks",
    "decolour_cine",
    "dynamic_range_check_record",
    "dynamic_range_disagreement",
    "enhancement_dict",
    "estimate_cine_motion",
    "fit_enhancing",
    "json_array",
    "load_clips",
    "map_prepared",
    "mask_curves",
    "measure_rois",
    "prepare_cine",
    "resolve_dynamic_range",
    "speckle_check_records",
    "with_assessment",
    "with_map_necrosis",
    "with_viable_part",
]
