"""looptop: starts the Python probe, then runs the sitecustomize this one shadows (if any), and
leaves the interpreter as the program expects it.

The agent puts this folder first on PYTHONPATH when it is preloaded into a Python process. Once
the probe runs, this module takes back what the program could trip over: the folder leaves
sys.path, sys.path_importer_cache and PYTHONPATH (a child process gets the probe from the agent
it inherits, not from PYTHONPATH); the probe's modules leave sys.modules; and sys.modules
holds the program's own sitecustomize, or none when it has none (this module then ends with the
ImportError site.py expects of a missing sitecustomize, which it ignores silently)."""
import os
import sys


def _start_probe(here):
    before = set(sys.modules)
    try:
        import looptop_probe  # noqa: F401  (it keeps itself alive through its hooks)
    except Exception:  # the probe fails open
        pass
    # Only stateless modules may be loaded here (the probe itself and `gc`): a later import by
    # the program loads them afresh.
    for name in set(sys.modules) - before:
        sys.modules.pop(name, None)
    while here in sys.path:
        sys.path.remove(here)
    sys.path_importer_cache.pop(here, None)
    path = os.environ.get("PYTHONPATH")
    if path == here:
        del os.environ["PYTHONPATH"]
    elif path is not None and path.startswith(here + os.pathsep):
        os.environ["PYTHONPATH"] = path[len(here) + 1:]


_start_probe(os.path.dirname(__file__))
del _start_probe

# Run the sitecustomize this one shadows (the program's, or the distribution's). The import
# system puts whatever sys.modules holds under the name when this module finishes; when there is
# none, the ImportError for "sitecustomize" leaves this module and site.py ignores it, as it does
# without looptop. Any other error of the program's sitecustomize reaches site.py unchanged too.
sys.modules.pop("sitecustomize", None)
import sitecustomize  # noqa: E402,F401
