"""rscore-surgical: DICOM series in, Hounsfield-unit CT and endoscopy templates, per-slice results.

The plugin is registered through the ``rscore`` entry-point group as ``surgical`` (:mod:`rscore_surgical.plugin`).
"""

__version__ = "0.1.0"
