"""Import tlslite-ng's message modules without running its package `__init__`.

`tlslite/__init__.py` imports its whole API, integrations included (xmlrpc, http.server, pydoc,
asyncore): 80 modules where the ClientHello parser needs 30, about 60 ms of every receiver
process's start. Registering the package as a bare namespace first lets its submodules import
as usual; a process that already imported the full package keeps it.
"""

from __future__ import annotations

import importlib.util
import sys
import types

PACKAGE = "tlslite"


def register_bare_package(name: str = PACKAGE) -> types.ModuleType:
    """Put package `name` in sys.modules without executing its `__init__`; return the module."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError(f"{name} is not an installed package", name=name)
    package = types.ModuleType(name)
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    package.__file__ = spec.origin
    package.__package__ = name
    sys.modules[name] = package
    return package
