"""ceuskit: quantitative contrast-enhanced ultrasound and venous-mass work-up.

ceuskit supports a clinician's decision; it never states a diagnosis.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "ceuskit is decision support for a qualified clinician, not a diagnosis. "
    "It is not a medical device and is not clinically validated. "
    "A \"low\" level does not exclude a tumour. "
    "Its measurements and suggestions must be read with the images and the "
    "whole clinical picture."
)

__all__ = ["DISCLAIMER", "__version__"]
