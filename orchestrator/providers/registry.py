"""The providers this orchestrator speaks, by the name a manifest gives them.

The one place that names concrete providers. Adding a provider is a folder under providers/
with a ``plugin.py`` exposing ``PLUGIN`` (see plugin.py), and one line here.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from types import MappingProxyType

from orchestrator.providers.plugin import ProviderPlugin

__all__ = ["DEFAULT_PROVIDER", "NAMES", "plugin", "plugins"]

#: name -> the module holding its PLUGIN; the first is the default provider.
_MODULES = {
    "kling": "orchestrator.providers.kling.plugin",
    "ltx": "orchestrator.providers.ltx.plugin",
}
NAMES = tuple(_MODULES)
#: The provider of a manifest that names none.
DEFAULT_PROVIDER = NAMES[0]


@functools.cache
def plugins() -> Mapping[str, ProviderPlugin]:
    found: dict[str, ProviderPlugin] = {}
    for name, module in _MODULES.items():
        loaded = importlib.import_module(module).PLUGIN
        assert isinstance(loaded, ProviderPlugin) and loaded.name == name
        found[name] = loaded
    return MappingProxyType(found)


def plugin(name: str) -> ProviderPlugin:
    """The plug-in of ``name`` (KeyError for a name not in NAMES)."""
    return plugins()[name]
