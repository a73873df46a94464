"""The manifest: a batch described in YAML, read and checked completely before anything is sent.

Every problem is reported at once, with the item id, the field and the line (in the manifest, or
in its items file), so that one ``validate`` run is enough to fix a batch. The package, one
concern a module:

- :mod:`~orchestrator.config.problems`: :class:`Problem`, :class:`ManifestError`, and the sink
  every other piece reports into (problems located by document path and line);
- :mod:`~orchestrator.config.yaml_lines`: YAML -> plain data with the line of every value;
  duplicate keys as problems, size limits;
- :mod:`~orchestrator.config.sections`: the provider-neutral sections (provider, limits, retry,
  poll, output) and the frozen settings they give;
- :mod:`~orchestrator.config.items_file`: ``items_from``, a CSV or JSONL file of items;
- :mod:`~orchestrator.config.pricing_section`: ``pricing:`` and ``limits.max_units``;
- :mod:`~orchestrator.config.items`: each item checked through the item schema;
- :mod:`~orchestrator.config.manifest`: :class:`Manifest` and :func:`load_manifest`;
- :mod:`~orchestrator.config.json_schema`: the manifest's JSON Schema, per provider, from the
  same models; :mod:`~orchestrator.config.field_docs` renders its field reference, and
  :mod:`~orchestrator.config.starter` the manifest ``init`` writes.
"""

from orchestrator.config.items import Item
from orchestrator.config.manifest import Manifest, load_manifest
from orchestrator.config.problems import ManifestError, Problem
from orchestrator.config.sections import (
    SIMULATOR_BASE_URL,
    Deadline,
    Limits,
    PollSettings,
    ProviderSettings,
    RetrySettings,
)

__all__ = [
    "SIMULATOR_BASE_URL",
    "Deadline",
    "Item",
    "Limits",
    "Manifest",
    "ManifestError",
    "PollSettings",
    "Problem",
    "ProviderSettings",
    "RetrySettings",
    "load_manifest",
]
