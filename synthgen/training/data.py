"""Training data as endless streams: real COCO images, synthetic data, and their mix.

A *source* yields :class:`TrainItem` s forever (``stream(seed, part, parts, resume_from)``);
``part``/``parts`` name this reader among all data-loader workers of all processes, so that
they read different data, and ``resume_from`` (samples consumed before a resume) moves a resumed
run on to fresh data instead of replaying the start. Labels are ``1..K`` in the order of
``source.categories`` (``[{"id", "name"}]``), the label space of the detector trained on it.

Sources:

* :class:`CocoSource`: a COCO file (real photos, or a synthgen COCO folder), reshuffled every
  epoch; ``real_subset`` draws the few-shot subset.
* :class:`WebDatasetSource`: synthgen WebDataset shards, resampled with replacement (endless).
* :class:`IteratorSource`: a live in-process stream of :class:`synthgen.sample.Sample`, from any
  factory ``(start, step) -> Iterator[Sample]`` that yields samples ``start, start + step, ...``
  (``functools.partial(synthgen.engine.iter_samples, spec)`` has that shape).
* :class:`DevicePasteSource`: the live paste stream drawn by the torch compositor on the
  training device: batches go from the compositor to the model without leaving the device
  (planned on the host, in ``num_workers`` paste worker processes).
* :class:`MixedSource`: weighted random interleaving of a real and a synthetic stream. (The paper
  authors concatenated two endlessly repeated datasets, so their "mixed" runs never reached a
  synthetic sample; interleaving draws from both at the requested ratio from the first batch.)

:func:`make_loader` turns a source into a torch ``DataLoader`` of ``(images, targets)`` batches
in torchvision's detection format. Real photos (``TrainItem.augment``) get SSD-style
augmentation: a random IoU crop that keeps boxes whose centres stay inside, horizontal flip and
colour jitter; every image is then resized to a square ``image_size``. Augmentation draws from
torch's generator, which the training loop seeds (and the DataLoader seeds per worker), so a
run is reproducible for the same seed and number of workers.
"""

from __future__ import annotations

import atexit
import glob
import json
import random
from dataclasses import dataclass
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import tv_tensors
from torchvision.transforms import v2

from synthgen.errors import InputError
from synthgen.imageio import decode_jpeg
from synthgen.readers import without_crowd
from synthgen.sample import Sample
from synthgen.training.coco import CocoSet, load_coco

Categories = list[dict[str, Any]]  # [{"id": int, "name": str}] in label order


@dataclass
class TrainItem:
    """One training image with its targets in the source's label space."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: np.ndarray  # (N, 4) float32 xyxy pixels
    labels: np.ndarray  # (N,) int64 labels 1..K
    augment: bool  # real photos are augmented; synthetic samples are random enough already
    origin: str  # "real" or "synthetic"


class Source(Protocol):
    categories: Categories

    def stream(self, seed: int, part: int, parts: int, resume_from: int = 0) -> Iterator[TrainItem]:
        """Items for reader ``part`` of ``parts``, endlessly (finite only for finite inputs)."""
        ...


def label_lookup(categories: Categories) -> dict[int, int]:
    """COCO category id -> detector label (1-based position in ``categories``)."""
    return {int(c["id"]): k for k, c in enumerate(categories, start=1)}


def _item(
    image: np.ndarray,
    boxes: np.ndarray,
    category_ids: Sequence[int],
    lookup: dict[int, int],
    augment: bool,
    origin: str,
    where: str,
) -> TrainItem:
    """A TrainItem in label space, boxes clipped to the image; empty boxes are no targets."""
    unknown = sorted({int(c) for c in category_ids} - lookup.keys())
    if unknown:
        raise InputError(f"{where} has boxes of category id(s) {unknown}, which its categories do not list")
    h, w = image.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # empty boxes are no targets
    labels = np.array([lookup[int(c)] for c in category_ids], dtype=np.int64).reshape(-1)
    return TrainItem(image, boxes[keep], labels[keep], augment, origin)


def real_subset(image_ids: Sequence[int], n: int | None, seed: int) -> list[int]:
    """``n`` image ids drawn with ``seed`` (all of them, sorted, when ``n`` is None).

    The draw is a prefix of one permutation of the sorted ids, so it is stable for the same
    seed and nested: the 50-image subset is part of the 100-image subset of the same seed.
    """
    ids = sorted(int(i) for i in image_ids)
    if n is None:
        return ids
    if not 1 <= n <= len(ids):
        raise InputError(f"cannot draw {n} real images from a set of {len(ids)}; use 1..{len(ids)}")
    order = np.random.default_rng(seed).permutation(len(ids))[:n]
    return sorted(ids[i] for i in order)


class CocoSource:
    """Images of a COCO file (optionally only ``image_ids``), each epoch in a new order.

    Crowd boxes are dropped (they mark ignore regions, not objects); images whose only boxes
    are crowd boxes still train, as background.
    """

    def __init__(
        self, coco: CocoSet, image_ids: Sequence[int] | None = None, *, augment: bool, origin: str = "real"
    ) -> None:
        self.coco = coco
        self.image_ids = list(coco.image_ids if image_ids is None else image_ids)
        if not self.image_ids:
            raise InputError(f"no images selected from {coco.source}")
        self.categories: Categories = coco.categories
        self.augment = augment
        self.origin = origin
        self._lookup = label_lookup(self.categories)

    def item(self, image_id: int) -> TrainItem:
        targets = self.coco.targets(image_id)
        keep = ~targets.iscrowd
        return _item(
            self.coco.read_image(image_id),
            targets.xyxy[keep],
            targets.category_ids[keep],
            self._lookup,
            self.augment,
            self.origin,
            f"image {image_id} of {self.coco.source}",
        )

    def stream(self, seed: int, part: int, parts: int, resume_from: int = 0) -> Iterator[TrainItem]:
        # Every reader walks its own permutations: small few-shot sets may have fewer images
        # than readers, and an endless stream needs no exact partition of each epoch.
        for epoch in count():
            order = np.random.default_rng([seed, part, parts, resume_from, epoch]).permutation(len(self.image_ids))
            for i in order:
                yield self.item(self.image_ids[i])


def load_categories(path: Path) -> Categories:
    """A ``categories.json`` (``[{"id", "name"}]``, as synthgen's WebDataset writer makes it)."""
    if not path.is_file():
        raise InputError(
            f"{path} does not exist: synthgen WebDataset shards come with a categories.json beside them; "
            "pass its path (--categories) when the shards are elsewhere"
        )
    try:
        items = json.loads(path.read_text())
        categories = sorted(({"id": int(c["id"]), "name": str(c["name"])} for c in items), key=lambda c: c["id"])
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as err:
        raise InputError(f"{path} is not a list of {{'id', 'name'}} categories ({err})") from None
    if not categories:
        raise InputError(f"{path} lists no categories")
    return categories


def webdataset_urls(spec: str) -> list[str]:
    """Shard URLs from a folder (its ``*.tar``), a glob, brace notation
    (``shard-{000000..000009}.tar``) or a single URL (``pipe:``/``http(s)://`` included)."""
    path = Path(spec)
    if path.is_dir():
        urls = sorted(str(p) for p in path.glob("*.tar"))
        if not urls:
            raise InputError(f"folder {path} holds no .tar shards")
        return urls
    if any(ch in spec for ch in "*?["):
        urls = sorted(glob.glob(spec))
        if not urls:
            raise InputError(f"no shards match {spec}")
        return urls
    from webdataset.shardlists import expand_urls

    urls = expand_urls(spec)
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
    missing = [u for u in local if not Path(u).is_file()]
    if missing:
        raise InputError(f"{len(missing)} of {len(urls)} shard(s) do not exist, e.g. {missing[0]}")
    return urls


class WebDatasetSource:
    """synthgen WebDataset shards (``<key>.jpg`` + ``<key>.json`` with ``boxes`` xyxy and
    ``labels`` category ids), resampled with replacement: an endless stream."""

    def __init__(self, urls: Sequence[str], categories: Categories, *, shuffle_buffer: int = 1000) -> None:
        if not urls:
            raise InputError("no WebDataset shards given")
        self.urls = list(urls)
        self.categories = categories
        self.shuffle_buffer = shuffle_buffer
        self._lookup = label_lookup(categories)

    def stream(self, seed: int, part: int, parts: int, resume_from: int = 0) -> Iterator[TrainItem]:
        import webdataset as wds

        state = np.random.SeedSequence([seed, part, parts, resume_from]).generate_state(2)
        pipeline = wds.DataPipeline(
            wds.ResampledShards(self.urls, seed=int(state[0]), worker_seed=lambda: part, deterministic=True),
            wds.tarfile_to_samples(),
            # Resampling picks shards at random; the buffer mixes samples across shards too.
            wds.shuffle(self.shuffle_buffer, initial=min(100, self.shuffle_buffer), rng=random.Random(int(state[1]))),
        )
        for sample in pipeline:
            yield self._decode(sample)

    def _decode(self, sample: dict[str, Any]) -> TrainItem:
        where = f"sample {sample.get('__key__')} of {sample.get('__url__')}"
        if "jpg" not in sample or "json" not in sample:
            raise InputError(f"{where} lacks a .jpg or .json member; is this a synthgen WebDataset shard?")
        try:
            meta = json.loads(sample["json"])
            image = decode_jpeg(sample["jpg"])
            boxes, labels = without_crowd(meta, "boxes", "labels")  # crowd regions are no targets
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"{where} is not a synthgen sample ({err})") from None
        return _item(image, np.array(boxes, dtype=np.float32), labels, self._lookup, False, "synthetic", where)


SampleFactory = Callable[[int, int], Iterator[Sample]]


class IteratorSource:
    """A live stream of rendered samples: ``factory(start, step)`` yields samples ``start,
    start + step, ...``; each reader takes its own residue class of sample indices."""

    def __init__(self, factory: SampleFactory, categories: Categories) -> None:
        self.factory = factory
        self.categories = categories
        self._lookup = label_lookup(categories)

    def stream(self, seed: int, part: int, parts: int, resume_from: int = 0) -> Iterator[TrainItem]:
        # Sample i depends only on the generator's own seed, so ``seed`` has no role here.
        for sample in self.factory(resume_from + part, parts):
            objects = [a for a in sample.annotations if not a.iscrowd]  # crowd regions: ignore regions, not targets
            yield _item(
                sample.image,
                np.array([a.xyxy for a in objects], dtype=np.float32),
                [a.category_id for a in objects],
                self._lookup,
                False,
                "synthetic",
                f"synthetic sample {sample.index}",
            )


class MixedSource:
    """Real and synthetic items interleaved at random: each item is synthetic with probability
    ``synthetic_fraction``. Labels follow the real data's categories; the synthetic categories
    are matched to them by name and must name the same classes."""

    def __init__(self, real: Source, synthetic: Source, synthetic_fraction: float) -> None:
        if not 0.0 < synthetic_fraction < 1.0:
            raise InputError(f"the synthetic fraction of a mix must lie strictly between 0 and 1, got {synthetic_fraction}")
        real_names = [c["name"] for c in real.categories]
        synthetic_names = [c["name"] for c in synthetic.categories]
        if sorted(real_names) != sorted(synthetic_names):
            raise InputError(
                f"real and synthetic data name different classes ({real_names} vs {synthetic_names}); "
                "a mix needs the same class names in both"
            )
        self.real = real
        self.synthetic = synthetic
        self.synthetic_fraction = synthetic_fraction
        self.categories = real.categories
        # synthetic label k -> real label with the same name (index 0 unused: background)
        self._remap = np.array([0] + [real_names.index(n) + 1 for n in synthetic_names], dtype=np.int64)

    def stream(self, seed: int, part: int, parts: int, resume_from: int = 0) -> Iterator[TrainItem]:
        rng = np.random.default_rng([seed, part, parts, resume_from, 0x6D6978])
        real = self.real.stream(seed, part, parts, resume_from)
        synthetic = self.synthetic.stream(seed, part, parts, resume_from)
        while True:
            if rng.random() < self.synthetic_fraction:
                item = next(synthetic, None)
                if item is not None:
                    item.labels = self._remap[item.labels]
            else:
                item = next(real, None)
            if item is None:
                return
            yield item


class DetectionTransform:
    """TrainItem -> (float image tensor ``(3, S, S)`` in [0, 1], torchvision target dict)."""

    def __init__(self, image_size: int) -> None:
        self.iou_crop = v2.RandomIoUCrop()
        self.resize = v2.Resize((image_size, image_size), antialias=True)
        self.photometric = v2.Compose(
            [v2.RandomHorizontalFlip(), v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02)]
        )
        self.finish = v2.Compose(
            [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0), v2.ToDtype(torch.float32, scale=True)]
        )

    def __call__(self, item: TrainItem) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        h, w = item.image.shape[:2]
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(item.image)).permute(2, 0, 1))
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(item.boxes), format="XYXY", canvas_size=(h, w)),
            "labels": torch.from_numpy(item.labels),
        }
        if item.augment and len(item.boxes):  # the IoU crop needs a box to keep
            image, target = self.iou_crop(image, target)
        image, target = self.resize(image, target)
        if item.augment:
            image, target = self.photometric(image, target)
        image, target = self.finish(image, target)
        return image.as_subclass(torch.Tensor), {
            "boxes": target["boxes"].as_subclass(torch.Tensor).float(),
            "labels": target["labels"],
        }


class StreamDataset(IterableDataset):
    """A source as a torch IterableDataset; each DataLoader worker of each process reads its
    own part of the stream."""

    def __init__(
        self, source: Source, image_size: int, seed: int, *, resume_from: int = 0, rank: int = 0, world_size: int = 1
    ) -> None:
        super().__init__()
        self.source = source
        self.transform = DetectionTransform(image_size)
        self.seed = seed
        self.resume_from = resume_from
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        part = self.rank * workers + worker
        for item in self.source.stream(self.seed, part, self.world_size * workers, self.resume_from):
            yield self.transform(item)


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Detection batches stay lists: torchvision models take images of any size."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def make_loader(
    source: Source,
    *,
    image_size: int,
    batch_size: int,
    seed: int,
    num_workers: int = 0,
    resume_from: int = 0,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> DataLoader | Iterator[tuple[list[torch.Tensor], list[dict]]]:
    """Batches ``(images, targets)`` of ``source`` for one training process (a
    :class:`DevicePasteSource` makes them on its device, with no DataLoader)."""
    if isinstance(source, DevicePasteSource):
        return source.batches(image_size=image_size, batch_size=batch_size, num_workers=num_workers,
                              resume_from=resume_from, rank=rank, world_size=world_size)
    dataset = StreamDataset(source, image_size, seed, resume_from=resume_from, rank=rank, world_size=world_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        # Seeds each worker's torch generator (augmentation) from the run's seed.
        generator=torch.Generator().manual_seed(seed * 1000 + rank),
    )


def live_paste_source(spec, device: str | torch.device | None = None) -> IteratorSource | DevicePasteSource:
    """A live stream of ``synthgen paste`` samples for ``spec`` (a :class:`synthgen.engine.PasteSpec`),
    with nothing written to disk. With the torch compositor (``spec.compositor == "torch"``) and
    a ``device``, a :class:`DevicePasteSource` drawing on that device; otherwise rendered in the
    training process and its loader workers: each loader worker is a paste worker taking its own
    residue class of sample indices."""
    from synthgen.engine import prepare, render_stream

    scene = prepare(spec)  # resolve inputs and build pools once, not per stream
    if scene.generated is not None:  # generator objects: blocks in a temporary cache folder, gone at exit
        scene.generated.attach(None)
        atexit.register(scene.generated.close)
    compositor = scene.compositor
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(compositor.categories)]
    on_host = IteratorSource(partial(render_stream, compositor, spec), categories)
    if spec.compositor == "torch" and device is not None:
        return DevicePasteSource(compositor, spec, device, on_host)
    return on_host


class DevicePasteSource:
    """The live paste stream drawn by :class:`synthgen.compositor.torch_render.TorchCompositor`
    on ``device``: :meth:`batches` yields training batches already on the device (images
    resized to a square ``image_size`` like :class:`DetectionTransform`, boxes scaled, clamped
    and kept when at least 1 px wide and high). Sample indices are ``resume_from + rank``,
    stepping by ``world_size``, so the samples do not depend on the batch size or the planning
    workers. ``stream`` (used in a mix with real photos) is the host stream ``on_host``."""

    def __init__(self, compositor, spec, device: str | torch.device, on_host: IteratorSource) -> None:
        self.compositor = compositor
        self.spec = spec
        self.device = torch.device(device)
        self.categories = on_host.categories
        self.stream = on_host.stream

    def batches(self, *, image_size: int, batch_size: int, num_workers: int = 0, resume_from: int = 0,
                rank: int = 0, world_size: int = 1) -> Iterator[tuple[list[torch.Tensor], list[dict]]]:
        from synthgen.compositor.torch_render import Planner, TorchCompositor
        from synthgen.engine import render_stream

        host = self.compositor
        planner = Planner(host.config, host.objects, host.backgrounds, host.distractors, host.labels)
        planned = render_stream(planner, self.spec, resume_from + rank, world_size, num_workers)
        drawer = None
        try:
            while True:
                batch = [next(planned) for _ in range(batch_size)]
                if drawer is None:  # after the planning workers have forked
                    drawer = TorchCompositor.from_compositor(planner, self.device)
                yield self._to_training(drawer.draw(batch), batch, image_size)
        finally:
            planned.close()  # stops the planning workers

    def _to_training(self, images: torch.Tensor, samples, image_size: int) -> tuple[list[torch.Tensor], list[dict]]:
        height, width = images.shape[1:3]
        pixels = images.permute(0, 3, 1, 2).float().div_(255.0)
        pixels = torch.nn.functional.interpolate(pixels, size=(image_size, image_size), mode="bilinear",
                                                 align_corners=False, antialias=True).clamp_(0.0, 1.0)
        scale = torch.tensor([image_size / width, image_size / height] * 2, device=self.device)
        targets = []
        for sample in samples:
            objects = [a for a in sample.annotations if not a.iscrowd]  # crowd regions: ignore regions, not targets
            boxes = torch.tensor([a.xyxy for a in objects], dtype=torch.float32).reshape(-1, 4).to(self.device)
            boxes = (boxes * scale).clamp_(0.0, float(image_size))
            keep = ((boxes[:, 2] - boxes[:, 0]) >= 1.0) & ((boxes[:, 3] - boxes[:, 1]) >= 1.0)
            labels = torch.tensor([a.category_id for a in objects], dtype=torch.int64).to(self.device)
            targets.append({"boxes": boxes[keep], "labels": labels[keep]})
        return list(pixels), targets


def augment_paste_source(real: CocoSource, spec, fraction: float) -> MixedSource:
    """Copy-paste augmentation of a real COCO set, live: a share ``fraction`` of the items are
    ``spec``'s objects pasted onto the set's own images (only ``real``'s, e.g. its few-shot
    subset), their boxes kept and updated where the pasted objects cover them (``synthgen
    paste --keep-annotations``); the rest are the real items as they are."""
    import dataclasses

    if not 0.0 < fraction < 1.0:
        raise InputError(f"--augment-paste {fraction}: the share of pasted-onto images must lie strictly between 0 and 1")
    spec = dataclasses.replace(
        spec,
        backgrounds=f"coco:{real.coco.source}",
        keep_annotations=True,
        background_images=tuple(real.image_ids),
        exclude_classes=(),
    )
    return MixedSource(real, live_paste_source(spec), fraction)


def open_source(
    data: str,
    *,
    real: bool,
    n_images: int | None = None,
    seed: int = 0,
    categories: str | Path | None = None,
    images_root: str | Path | None = None,
) -> Source:
    """The source a ``--data`` argument names. ``real`` marks real photos, which are augmented;
    synthetic data is used as rendered.

    * a ``.json`` file, or a folder with ``annotations.json``: COCO (``n_images`` draws a seeded
      subset, see :func:`real_subset`);
    * a folder of ``.tar`` shards, a glob, brace notation or a URL: WebDataset; categories come
      from ``categories`` or the ``categories.json`` beside local shards.
    """
    path = Path(data)
    remote_or_pattern = "://" in data or data.startswith("pipe:") or any(ch in data for ch in "*?[{")
    if not remote_or_pattern and not path.exists():
        raise InputError(
            f"{data} does not exist; expected a COCO .json file (or a folder with annotations.json), or WebDataset "
            "shards: a folder of .tar files, a glob, or brace notation such as shard-{000000..000009}.tar"
        )
    if path.suffix.lower() == ".json" or (path.is_dir() and (path / "annotations.json").is_file()):
        coco = load_coco(path, images_root)
        ids = real_subset(coco.image_ids, n_images, seed)
        return CocoSource(coco, ids, augment=real, origin="real" if real else "synthetic")
    if n_images is not None:
        raise InputError("--n-real draws a subset of a COCO file; WebDataset shards are an endless stream")
    urls = webdataset_urls(data)
    if categories is None:
        first = urls[0]
        if "://" in first or first.startswith("pipe:"):
            raise InputError(f"remote shards {data}: pass the path of their categories.json (--categories)")
        categories = Path(first).parent / "categories.json"
    return WebDatasetSource(urls, load_categories(Path(categories)))
