"""synthgen: unlimited, correctly boxed synthetic detection data, and detector pretraining on it.

The pipeline reads left to right: ``sources`` (object images) -> ``segmenters`` (cut the object
out) -> ``pool`` (cached cut-outs) -> ``compositor`` (paste onto ``backgrounds``) -> ``writers``
(COCO, WebDataset, YOLO). ``engine.run_paste`` drives it; ``cli`` is a thin typer layer over it.
"""

__version__ = "0.1.0"
