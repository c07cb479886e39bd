"""looptop: loads the Python probe, then the sitecustomize this one shadows (if any).

The agent puts this folder first on PYTHONPATH when it is preloaded into a Python process."""
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
try:
    import looptop_probe  # noqa: F401
except Exception:  # the probe fails open
    pass
try:
    sys.path.remove(_here)
except ValueError:
    pass
# Run the sitecustomize this one shadows; the import system expects to find this module under
# the name when it finishes, so it is put back afterwards.
_ours = sys.modules.pop("sitecustomize")
try:
    import sitecustomize  # noqa: F401  (the user's or the distribution's own)
except ImportError:
    pass
finally:
    sys.modules["sitecustomize"] = _ours
