"""Training items from a manifest: each (row, frame, query) as the engine would see it.

A picture is prepared exactly as at inference: the scene is opened with the plugin's reader and the row's options,
the plugin's ``rscore_preprocess`` hooks run on it (colour correction, CT windows...), and ``scene_rgb8`` renders
what a VLM is shown. The ground truth is read at the scene's size (ignore pixels count as background).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from rscore.errors import RscoreError
from rscore.evaluation.manifest import Manifest, Sample
from rscore.types import ArraySource, Request, Scene

if TYPE_CHECKING:
    from rscore.plugins import Registry

__all__ = ["TrainItem", "Prepared", "training_items", "SceneLoader", "shape_only"]


@dataclass(frozen=True)
class TrainItem:
    """One training example: a manifest row, which of its frames, and one of its queries."""

    sample: Sample
    frame: int
    query: str


@dataclass(frozen=True)
class Prepared:
    """A training item ready for augmentation: the preprocessed scene, its RGB picture and target mask."""

    item: TrainItem
    scene: Scene
    request: Request
    rgb: np.ndarray
    mask: np.ndarray


def training_items(manifest: Manifest) -> list[TrainItem]:
    """Every (row, frame, query) of the manifest, in order."""
    return [
        TrainItem(s, f, q) for s in manifest.samples for f in range(len(s.images)) for q in s.queries
    ]


def shape_only(scene: Scene, height: int, width: int) -> Scene:
    """The scene's metadata with a pixel grid of ``height`` x ``width`` (no pixels: a broadcast zero view), for
    describing an augmented picture (rotated or cropped) to the model."""
    if (height, width) == scene.shape:
        return scene
    zeros = np.broadcast_to(np.zeros((1, 1, 1), np.uint8), (scene.source.count, height, width))
    return scene.replace(source=ArraySource(zeros))


class SceneLoader:
    """Opens and preprocesses training items, keeping the last ``cache_size`` in memory."""

    def __init__(
        self,
        manifest: Manifest,
        plugin: str | None,
        registry: Registry,
        engine_options: Mapping[str, Any],
        cache_size: int = 16,
    ) -> None:
        self.manifest, self.plugin, self.registry = manifest, plugin, registry
        self.engine_options = dict(engine_options)
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, int, str], Prepared] = OrderedDict()

    def load(self, item: TrainItem) -> Prepared:
        """The item's scene, picture and mask; errors carry the manifest file and line."""
        key = (item.sample.id, item.frame, item.query)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        try:
            prepared = self._load(item)
        except RscoreError as exc:
            raise type(exc)(f"{self.manifest.where(item.sample)}: {exc}") from None
        self._cache[key] = prepared
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return prepared

    def _load(self, item: TrainItem) -> Prepared:
        from rscore.engine import open_scene, validate_query
        from rscore.io.images import scene_rgb8

        sample = item.sample
        options = {**self.engine_options, **sample.options}
        scene = open_scene(sample.images[item.frame], plugin=self.plugin, options=options, registry=self.registry)
        request = Request(query=validate_query(item.query), plugin=self.plugin, options=options)
        for fn in self.registry.hookimpls_for("rscore_preprocess", self.plugin):
            out = fn(scene=scene, request=request)
            if out is not None:
                scene = out
        spec = sample.masks[item.frame]
        if spec is None:
            mask = np.zeros(scene.shape, bool)
        else:
            target, ignore = spec.load(scene.shape)
            mask = target if ignore is None else target & ~ignore
        return Prepared(item, scene, request, scene_rgb8(scene), mask)

