"""Photo -> face encodings, and checks for ready-made encodings.

Part of the optional ``faces`` extra (``pip install 'faceseal[faces]'``): importing this package
is cheap and works without it, because Pillow, dlib and the model files are loaded only when a
photo is first read or encoded. Reading ``.npy``/``.json`` encodings needs numpy only.
"""

from __future__ import annotations

from faceseal.encoders.dlib_resnet import MODEL_ID, DlibResNetEncoder, EncodedFace, FaceBox
from faceseal.encoders.files import is_encoding_file, load_encodings_file
from faceseal.encoders.images import is_image_file, load_image
from faceseal.encoders.validation import SUPPORTED_DTYPES, validate_encoding

__all__ = [
    "MODEL_ID",
    "SUPPORTED_DTYPES",
    "DlibResNetEncoder",
    "EncodedFace",
    "FaceBox",
    "is_encoding_file",
    "is_image_file",
    "load_encodings_file",
    "load_image",
    "validate_encoding",
]
