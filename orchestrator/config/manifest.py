"""A manifest, loaded: :func:`load_manifest` ties the pieces of the package together.

Loading happens in three steps, each reporting into one :class:`ProblemSink` so that every
problem is found before anything is sent:

1. YAML events -> plain data, with the line of every key and list entry
   (:mod:`orchestrator.config.yaml_lines`);
2. the provider-neutral sections (:mod:`~orchestrator.config.sections`), the prices
   (:mod:`~orchestrator.config.pricing_section`) and the defaults;
3. the items, the manifest's own and then the items file's
   (:mod:`~orchestrator.config.items_file`), each checked through the item schema
   (:mod:`~orchestrator.config.items`), then what needs all of them (a model no item names,
   ``limits.max_units``).

The result is a :class:`Manifest`, or a :class:`ManifestError` listing every problem.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config.demo_values import demo_like
from orchestrator.config.items import Item, ItemChecker, item_shape, read_defaults
from orchestrator.config.items_file import read_items_from, rows
from orchestrator.config.pricing_section import check_max_units, read_prices
from orchestrator.config.problems import ManifestError, Problem, ProblemSink
from orchestrator.config.sections import (
    Limits,
    PollSettings,
    ProviderSettings,
    RetrySettings,
    read_sections,
)
from orchestrator.config.yaml_lines import UNREADABLE, parse
from orchestrator.pricing import UNPRICED, Prices
from orchestrator.validators import got


@dataclass(frozen=True)
class Manifest:
    """A batch, fully validated: what the engine runs."""

    version: int
    name: str
    path: Path
    provider: ProviderSettings
    limits: Limits
    retry: RetrySettings
    poll: PollSettings
    output_dir: Path
    items: tuple[Item, ...]
    #: ``output.download``: False keeps the assets' URLs in the report without fetching them.
    download: bool = True
    #: ``output.download_timeout``: seconds one attempt at one file may take in all.
    download_timeout: float = 600.0
    #: The manifest's ``pricing:`` over the provider's built-in, indicative table, in the
    #: provider's unit (see pricing.py).
    pricing: Prices = UNPRICED
    #: The file ``items_from`` names, resolved; its items follow the manifest's own.
    items_from: Path | None = None
    #: What is allowed but worth saying (a deprecated model), one line each.
    warnings: tuple[str, ...] = ()


@contextlib.contextmanager
def _no_full_collections() -> Iterator[None]:
    """Hold off the garbage collector's full passes while a manifest loads.

    A 100,000-row items file leaves about a million objects alive; each full pass walks all of
    them and finds nothing (loading makes almost no reference cycles): about 15% of the load
    time. The young generations are still collected; the thresholds are restored after.
    """
    threshold = gc.get_threshold()
    gc.set_threshold(threshold[0], threshold[1], 1_000_000_000)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def load_manifest(path: Path, *, catalogue: Any = None) -> Manifest:
    """Read and fully validate a manifest; raise ManifestError listing every problem found.

    ``catalogue``: the model catalogue of the manifest's provider to validate against instead
    of the packaged one (for tests of catalogue changes)."""
    source = str(path)
    try:
        data = path.read_bytes()
        manifest_path = path.resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ManifestError(source, [Problem(f"cannot read the manifest: {reason}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ManifestError(
            source, [Problem("the file is not UTF-8 text: save it as UTF-8", line=line)]
        ) from None
    sink = ProblemSink(manifest_path)
    with _no_full_collections():
        manifest = _load(text, sink, path.parent, catalogue)
    problems = sink.problems()
    if manifest is None or problems:
        raise ManifestError(source, problems or [Problem("the manifest is not valid")])
    return manifest


def _load(text: str, sink: ProblemSink, display_dir: Path, catalogue: Any) -> Manifest | None:
    data = parse(text, sink)
    if data is UNREADABLE:
        return None
    if data is None:
        sink.report((), "the manifest is empty: it needs at least version, name and items")
        return None
    if not isinstance(data, dict):
        sink.report(
            (),
            "the manifest must be a mapping of keys (version, name, items, ...) at the top "
            f"level (got {got(data)})",
            sink.lines.get(()),
        )
        return None
    return _document(data, sink, display_dir, catalogue)


def _document(
    data: dict[str, Any], sink: ProblemSink, display_dir: Path, catalogue: Any
) -> Manifest | None:
    manifest_dir = sink.manifest_path.parent
    top, settings, plugin = read_sections(data, sink)
    if plugin is None:
        # No provider by that name (reported): its items cannot be checked.
        return None
    schema = plugin.schema
    options = (
        settings.provider.settings(plugin).options
        if settings is not None
        else schema.options.model_validate({})
    )
    rules = schema.rules(options, catalogue)
    pricing = read_prices(top.get("pricing"), sink, plugin, rules)
    shape = item_shape(schema)
    defaults = read_defaults(top.get("defaults"), sink, shape)
    has_file = "items_from" in top
    items_file = (
        read_items_from(top.get("items_from"), sink, shape.columns, manifest_dir, display_dir)
        if has_file
        else None
    )
    checker = ItemChecker(sink, rules, defaults, manifest_dir)
    items = checker.items(top.get("items"), optional=has_file)
    if items_file is not None:
        items += checker.file_items(items_file.path, rows(items_file, sink, shape.columns))
    checker.report_missing_model()
    if items_file is not None and not items and not sink.found:
        sink.report(
            ("items_from",),
            f"{items_file.written!r} has no items, and the manifest lists none: a batch "
            "needs at least one",
        )
    max_units = settings.limits.max_units if settings is not None else None
    if max_units is not None and pricing is not None:
        check_max_units((item.request for item in items), pricing, sink)
    if sink.found or settings is None or settings.name is None or pricing is None:
        return None
    output_dir = (
        settings.output.dir if settings.output.dir is not None else f"out/{settings.name}"
    )
    provider = settings.provider.settings(plugin)
    retry, poll = settings.retry.settings(), settings.poll.settings()
    return Manifest(
        version=1,
        name=settings.name,
        path=sink.manifest_path,
        provider=provider,
        limits=settings.limits.settings(plugin),
        retry=retry,
        poll=poll,
        output_dir=Path(os.path.normpath(manifest_dir / output_dir)),
        items=tuple(items),
        download=settings.output.download,
        download_timeout=settings.output.download_timeout,
        pricing=pricing,
        items_from=items_file.path if items_file is not None else None,
        warnings=(*rules.warnings.values(), *demo_like(provider.base_url, poll, retry)),
    )
