"""The model-file gate: refuse weights that could run code when loaded, by allowlist.

Formats are recognised by content, never by extension: safetensors, NumPy ``.npy``/``.npz``,
PyTorch zip and legacy checkpoints, raw pickle and joblib (also compressed), GGUF, ONNX,
Keras ``.keras``/``.h5``, TensorFlow SavedModel, and zip/tar/gzip archives scanned recursively.
Pickle streams are walked symbolically without executing them: every callable must be a literal
``(module, name)`` pair on the reviewed allowlist (``allowlist.json``). Unknown or ambiguous
content, a parse error or anything the readers cannot account for is a finding: the gate fails
closed. Public API: :func:`scan_path`, :func:`detect_format`, :class:`ScanReport`, :class:`Finding`.
"""

from integrity.scans.modelgate._report import Finding, ScanReport
from integrity.scans.modelgate.allowlist import ALLOWLIST_PATH, Allowlist, load_allowlist
from integrity.scans.modelgate.archives import Limits
from integrity.scans.modelgate.scanner import PICKLE_FORMATS, detect_format, scan_path

__all__ = ["ALLOWLIST_PATH", "PICKLE_FORMATS", "Allowlist", "Finding", "Limits", "ScanReport", "detect_format",
           "load_allowlist", "scan_path"]
