"""Dataset statistics: how many images and objects, per class, per image, and how big the boxes
are, to check a generated (or real) dataset before training on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Group
from rich.table import Table
from rich.text import Text

from synthgen.errors import InputError, WriteError
from synthgen.readers import Dataset

SIZE_BINS = 20  # bins of the relative-size histogram over [0, 1]
PIXEL_BINS = 20  # most bins of the width / height histograms (round steps from 0)
PLOT_CATEGORIES = 25  # most category bars in the plot
# COCO's object size classes, by box area in pixels (small < 32^2 <= medium < 96^2 <= large).
COCO_SIZES = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, float("inf")))


@dataclass
class Histogram:
    edges: list[float]  # len(counts) + 1 bin edges
    counts: list[int]

    @staticmethod
    def of(values: np.ndarray, edges: np.ndarray) -> "Histogram":
        counts, edges = np.histogram(values, bins=edges)
        return Histogram([float(e) for e in edges], [int(c) for c in counts])


def pixel_edges(values: np.ndarray, max_bins: int = PIXEL_BINS) -> np.ndarray:
    """Bin edges from 0 past the largest value, in round steps (1, 2 or 5 times a power of ten)
    so that ranges read well, with at most ``max_bins`` bins."""
    top = max(float(values.max()) if values.size else 1.0, 1.0)
    step = 1.0
    while top / step > max_bins:
        for factor in (2.0, 2.5, 2.0):  # 1 -> 2 -> 5 -> 10 -> 20 ...
            step *= factor
            if top / step <= max_bins:
                break
    return step * np.arange(max(1, int(np.ceil(top / step))) + 1)  # np.histogram's last bin includes its right edge


@dataclass
class DatasetStats:
    path: str
    format: str
    images: int
    objects: int
    empty_images: int  # images without any box
    objects_per_category: dict[str, int]  # every category, in category order (zeros included)
    objects_per_image: dict[int, int]  # number of boxes -> number of images
    box_width: Histogram  # pixels
    box_height: Histogram  # pixels
    box_size: Histogram  # sqrt(box area / image area): the box's side relative to the image
    coco_sizes: dict[str, int]  # objects per COCO size class (small, medium, large)


def compute_stats(path: str | Path, limit: int | None = None) -> DatasetStats:
    """Statistics of the dataset at ``path`` (its first ``limit`` samples); reads annotations and
    image headers only, so it is fast on large datasets."""
    dataset = Dataset(path)
    per_category = dict.fromkeys(dataset.categories, 0)
    per_image: dict[int, int] = {}
    widths, heights, sizes = [], [], []
    images = 0
    for sample in dataset.annotations(limit):
        images += 1
        per_image[len(sample.labels)] = per_image.get(len(sample.labels), 0) + 1
        for name in sample.names:
            per_category[name] = per_category.get(name, 0) + 1
        boxes = sample.boxes_xyxy.astype(np.float64)
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        widths.append(w)
        heights.append(h)
        sizes.append(np.sqrt(np.clip(w * h, 0, None) / (sample.width * sample.height)))
    if images == 0:
        raise InputError(f"{path} holds no samples")
    width, height, size = (np.concatenate(v) for v in (widths, heights, sizes))
    area = width * height
    return DatasetStats(
        path=str(path),
        format=dataset.format,
        images=images,
        objects=int(width.size),
        empty_images=per_image.get(0, 0),
        objects_per_category=per_category,
        objects_per_image=dict(sorted(per_image.items())),
        box_width=Histogram.of(width, pixel_edges(np.concatenate([width, height]))),  # shared bins: comparable
        box_height=Histogram.of(height, pixel_edges(np.concatenate([width, height]))),
        box_size=Histogram.of(np.clip(size, 0.0, 1.0), np.linspace(0.0, 1.0, SIZE_BINS + 1)),
        coco_sizes={name: int(((area >= lo) & (area < hi)).sum()) for name, lo, hi in COCO_SIZES},
    )


def _bar(count: int, largest: int, width: int = 30) -> str:
    return "█" * round(width * count / largest) if largest else ""


def _histogram_table(title: str, hist: Histogram, fmt: str) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("range", justify="right")
    table.add_column("boxes", justify="right")
    table.add_column("", style="cyan")
    largest = max(hist.counts, default=0)
    used = [i for i, count in enumerate(hist.counts) if count]
    for i in range(used[0], used[-1] + 1) if used else ():  # empty bins at either end are left out
        lo, hi, count = hist.edges[i], hist.edges[i + 1], hist.counts[i]
        table.add_row(f"{lo:{fmt}}–{hi:{fmt}}", f"{count:,}", _bar(count, largest))
    return table


def render_rich(stats: DatasetStats) -> Group:
    """Tables and text histograms of ``stats`` for a rich Console."""
    summary = Table(show_header=False, show_edge=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("images", f"{stats.images:,}")
    summary.add_row("objects", f"{stats.objects:,}")
    summary.add_row("objects per image", f"{stats.objects / stats.images:.2f}")
    summary.add_row("images without objects", f"{stats.empty_images:,}")
    for name, count in stats.coco_sizes.items():
        summary.add_row(f"{name} objects (COCO sizes)", f"{count:,}")

    categories = Table(title="objects per category", title_justify="left", show_edge=False)
    categories.add_column("category")
    categories.add_column("objects", justify="right")
    categories.add_column("share", justify="right")
    categories.add_column("", style="green")
    largest = max(stats.objects_per_category.values(), default=0)
    for name, count in stats.objects_per_category.items():
        share = f"{100 * count / stats.objects:.1f}%" if stats.objects else "-"
        categories.add_row(name, f"{count:,}", share, _bar(count, largest))

    per_image = Table(title="objects per image", title_justify="left", show_edge=False)
    per_image.add_column("objects", justify="right")
    per_image.add_column("images", justify="right")
    per_image.add_column("", style="magenta")
    largest = max(stats.objects_per_image.values(), default=0)
    for objects, images in stats.objects_per_image.items():
        per_image.add_row(str(objects), f"{images:,}", _bar(images, largest))

    parts: list = [Text(f"{stats.path} ({stats.format})", style="bold"), summary, Text(), categories, Text(), per_image]
    if stats.objects:
        parts += [
            Text(),
            _histogram_table("box size: sqrt(box area / image area)", stats.box_size, ".2f"),
            Text(),
            _histogram_table("box width (pixels)", stats.box_width, ".0f"),
            Text(),
            _histogram_table("box height (pixels)", stats.box_height, ".0f"),
        ]
    return Group(*parts)


def _save_figure(fig, png: str | Path) -> Path:
    """Write ``fig`` to ``png`` (its folder made if needed); a WriteError says why it could not."""
    out = Path(png)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    except OSError as err:
        raise WriteError(f"could not write the plot {out}: {err.strerror or err}") from err
    return out


def save_plot(stats: DatasetStats, png: str | Path) -> Path:
    """A 2x2 figure (objects per category, objects per image, box width and height, relative box
    size) saved as PNG. Uses the Agg canvas directly, so it never needs a display and leaves
    matplotlib's global backend alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 8), layout="constrained")
    FigureCanvasAgg(fig)
    (cat_ax, img_ax), (wh_ax, size_ax) = fig.subplots(2, 2)
    shown = dict(stats.objects_per_category)
    title = "objects per category"
    if len(shown) > PLOT_CATEGORIES:  # more bars than readable labels: the most frequent ones
        shown = dict(sorted(shown.items(), key=lambda item: -item[1])[:PLOT_CATEGORIES])
        title += f" (top {PLOT_CATEGORIES} of {len(stats.objects_per_category)})"
    cat_ax.barh(range(len(shown)), list(shown.values()), color="tab:green")
    cat_ax.set_yticks(range(len(shown)), list(shown), fontsize=8)
    cat_ax.invert_yaxis()
    cat_ax.set_title(title)
    cat_ax.set_xlabel("objects")

    img_ax.bar(list(stats.objects_per_image), list(stats.objects_per_image.values()), color="tab:purple")
    img_ax.set_title(f"objects per image ({stats.empty_images} of {stats.images} images empty)")
    img_ax.set_xlabel("objects in the image")
    img_ax.set_ylabel("images")

    for hist, label, colour in ((stats.box_width, "width", "tab:blue"), (stats.box_height, "height", "tab:orange")):
        wh_ax.stairs(hist.counts, hist.edges, label=label, color=colour, linewidth=1.5)
    wh_ax.set_title("box width and height")
    wh_ax.set_xlabel("pixels")
    wh_ax.set_ylabel("boxes")
    wh_ax.legend()

    size_ax.stairs(stats.box_size.counts, stats.box_size.edges, fill=True, color="tab:cyan")
    size_ax.set_title("box size relative to the image")
    size_ax.set_xlabel("sqrt(box area / image area)")
    size_ax.set_ylabel("boxes")
    fig.suptitle(f"{stats.path}: {stats.images:,} images, {stats.objects:,} objects")
    return _save_figure(fig, png)


ASPECT_EDGES = (0.0, 0.25, 0.33, 0.5, 0.67, 0.8, 0.9, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0, float("inf"))  # width / height


@dataclass
class PoolStats:
    """Sizes of an object pool's cut-outs (what ``synthgen segment`` made) and its build summary."""

    path: str
    objects: int
    objects_per_class: dict[str, int]  # every class, in class order (zeros included)
    width: Histogram  # pixels
    height: Histogram  # pixels
    aspect: Histogram  # width / height, ASPECT_EDGES
    percentiles: dict[str, dict[int, float]]  # "width" | "height" | "aspect" -> {5, 50, 95: value}
    rejected: dict[str, int]  # reason -> objects rejected at build time
    unreadable: int
    unreadable_examples: list[str]


def compute_pool_stats(path: str | Path) -> PoolStats:
    """Statistics of the cut-outs of the object pool folder ``path`` (its index only: no pixels read)."""
    from synthgen.pool import ObjectPool

    pool = ObjectPool.load(path)
    heights, widths = (pool.shapes[:, k].astype(np.float64) for k in (0, 1))
    aspect = widths / heights
    counts = np.bincount(pool.class_ids, minlength=len(pool.classes))
    edges = pixel_edges(np.concatenate([widths, heights]))  # shared bins: comparable
    summary = pool.summary
    return PoolStats(
        path=str(path),
        objects=len(pool),
        objects_per_class={name: int(counts[i]) for i, name in enumerate(pool.classes)},
        width=Histogram.of(widths, edges),
        height=Histogram.of(heights, edges),
        aspect=Histogram.of(aspect, np.asarray(ASPECT_EDGES)),
        percentiles={name: {q: float(np.percentile(values, q)) for q in (5, 50, 95)}
                     for name, values in (("width", widths), ("height", heights), ("aspect", aspect))},
        rejected={str(k): int(v) for k, v in summary.get("rejected", {}).items()},
        unreadable=int(summary.get("unreadable", 0)),
        unreadable_examples=[str(e) for e in summary.get("unreadable_examples", [])],
    )


def render_pool_rich(stats: PoolStats) -> Group:
    """Tables and text histograms of a pool's ``stats`` for a rich Console."""
    summary = Table(show_header=False, show_edge=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("cut-outs", f"{stats.objects:,}")
    summary.add_row("rejected when segmented", f"{sum(stats.rejected.values()):,}")
    for reason, count in stats.rejected.items():
        summary.add_row(f"  {reason}", f"{count:,}")
    summary.add_row("unreadable files", f"{stats.unreadable:,}")
    for example in stats.unreadable_examples[:5]:
        summary.add_row(f"  {example}", "")

    classes = Table(title="cut-outs per class", title_justify="left", show_edge=False)
    classes.add_column("class")
    classes.add_column("cut-outs", justify="right")
    classes.add_column("", style="green")
    largest = max(stats.objects_per_class.values(), default=0)
    for name, count in stats.objects_per_class.items():
        classes.add_row(name, f"{count:,}", _bar(count, largest))

    spread = Table(title="size percentiles", title_justify="left", show_edge=False)
    spread.add_column("")
    for q in (5, 50, 95):
        spread.add_column(f"{q}%", justify="right")
    for name, unit, fmt in (("width", " px", ".0f"), ("height", " px", ".0f"), ("aspect", " (w/h)", ".2f")):
        spread.add_row(name + unit, *(f"{stats.percentiles[name][q]:{fmt}}" for q in (5, 50, 95)))

    return Group(
        Text(f"{stats.path} (object pool)", style="bold"), summary, Text(), classes, Text(), spread, Text(),
        _histogram_table("cut-out width (pixels)", stats.width, ".0f"), Text(),
        _histogram_table("cut-out height (pixels)", stats.height, ".0f"), Text(),
        _histogram_table("aspect ratio (width / height)", stats.aspect, ".2f"),
    )


def save_pool_plot(stats: PoolStats, png: str | Path) -> Path:
    """Width/height and aspect-ratio histograms of a pool's cut-outs, saved as PNG (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4), layout="constrained")
    FigureCanvasAgg(fig)
    wh_ax, aspect_ax = fig.subplots(1, 2)
    for hist, label, colour in ((stats.width, "width", "tab:blue"), (stats.height, "height", "tab:orange")):
        wh_ax.stairs(hist.counts, hist.edges, label=label, color=colour, linewidth=1.5)
    wh_ax.set_title("cut-out width and height")
    wh_ax.set_xlabel("pixels")
    wh_ax.set_ylabel("cut-outs")
    wh_ax.legend()
    labels = [f"{lo:g}–{hi:g}" for lo, hi in zip(stats.aspect.edges[:-1], stats.aspect.edges[1:])]
    aspect_ax.bar(range(len(labels)), stats.aspect.counts, color="tab:cyan")
    aspect_ax.set_xticks(range(len(labels)), labels, rotation=45, fontsize=8)
    aspect_ax.set_title("aspect ratio (width / height)")
    aspect_ax.set_ylabel("cut-outs")
    fig.suptitle(f"{stats.path}: {stats.objects:,} cut-outs")
    return _save_figure(fig, png)


@dataclass(frozen=True)
class RealBoxRanges:
    """Paste ranges measured on real annotations (``synthgen paste --scale-from``): ``scale``
    is the 5th-95th percentile of each box's sqrt(w * h) / the image's short side (what
    CompositeConfig.scale means), ``objects_per_image`` the rounded 5th-95th percentile of the
    boxes per image (at least 1)."""

    path: str
    images: int
    boxes: int
    scale: tuple[float, float]
    objects_per_image: tuple[int, int]


def _sizes_and_counts(path: str | Path, limit: int | None = None) -> tuple[np.ndarray, list[int]]:
    """Each box's sqrt(w * h) / its image's short side, and the boxes per image, of the first
    ``limit`` samples of the dataset at ``path`` (annotations only, no image decoded)."""
    sizes, counts = [], []
    for sample in Dataset(path).annotations(limit):
        boxes = sample.boxes_xyxy.astype(np.float64).reshape(-1, 4)
        area = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
        sizes.append(np.sqrt(area) / min(sample.width, sample.height))
        counts.append(len(boxes))
    return (np.concatenate(sizes) if sizes else np.zeros(0)), counts


def real_box_ranges(path: str | Path) -> RealBoxRanges:
    """Measure :class:`RealBoxRanges` on the dataset at ``path`` (a COCO json, or any format
    :class:`~synthgen.readers.Dataset` reads); annotations only, no image is decoded."""
    size, counts = _sizes_and_counts(path)
    if size.size == 0:
        raise InputError(f"--scale-from {path}: it holds no boxes to measure; give the real dataset's annotations")
    lo, hi = (float(np.clip(np.percentile(size, q), 1e-3, 4.0)) for q in (5, 95))
    fewest, most = (int(np.rint(np.percentile(counts, q))) for q in (5, 95))
    fewest = max(1, fewest)
    return RealBoxRanges(str(path), len(counts), int(size.size), (round(lo, 3), round(hi, 3)), (fewest, max(fewest, most)))


#: Below this share of the validation boxes inside the synthetic size range, ``pretrain`` warns.
MIN_SIZE_OVERLAP = 0.5
SIZE_SAMPLE = 500  # synthetic samples read to measure their box sizes


def box_size_overlap_note(synthetic: str | Path | tuple[float, float], val: str | Path, *, limit: int = SIZE_SAMPLE) -> str | None:
    """A warning when the synthetic and the validation box sizes barely overlap, else None.

    Sizes are sqrt(w * h) / the image's short side (what ``--scale`` means). ``synthetic`` is
    either the ``(min, max)`` scale range the paste settings draw from, or a dataset (COCO,
    WebDataset shards, YOLO) whose first ``limit`` samples give the 5th-95th percentile range.
    The warning comes when fewer than :data:`MIN_SIZE_OVERLAP` of the validation boxes (the COCO
    file ``val``) lie in that range: a detector pretrained on those sizes starts far from the
    ones it is scored on. It names both ranges and what to do (``paste --scale-from``)."""
    if isinstance(synthetic, tuple):
        lo, hi = synthetic
        described = f"{lo:g}-{hi:g} (the paste settings' --scale)"
    else:
        sizes, _ = _sizes_and_counts(synthetic, limit)
        if sizes.size == 0:
            return None  # nothing to compare: box-less data is reported elsewhere
        lo, hi = (float(np.percentile(sizes, q)) for q in (5, 95))
        described = f"{lo:.2f}-{hi:.2f} (5th-95th percentile of {synthetic}'s first {limit:,} samples)"
    val_sizes, _ = _sizes_and_counts(val)
    if val_sizes.size == 0:
        return None
    inside = float(np.mean((val_sizes >= lo) & (val_sizes <= hi)))
    if inside >= MIN_SIZE_OVERLAP:
        return None
    val_lo, val_hi = (float(np.percentile(val_sizes, q)) for q in (5, 95))
    return (
        f"the synthetic and the validation box sizes barely overlap: synthetic boxes are {described} of the image's "
        f"short side, the validation boxes of {val} are {val_lo:.2f}-{val_hi:.2f} (5th-95th percentile), and only "
        f"{inside:.0%} of them lie in the synthetic range. Make the synthetic data with the real sizes: "
        f"`synthgen paste ... --scale-from {val}` (better: your real training annotations; in synthgen.toml, scale-from in [paste])"
    )
