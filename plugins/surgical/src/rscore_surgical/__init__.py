"""rscore-surgical: DICOM in, Hounsfield-unit and endoscopy templates."""

__version__ = "0.1.0"
