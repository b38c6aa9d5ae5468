"""Detector training on synthetic and real data.

* :mod:`synthgen.training.data`: COCO files, WebDataset shards and live sample streams as
  endless training streams, their weighted mix, the seeded few-shot subset, the DataLoader.
* :mod:`synthgen.training.loop`: ``TrainConfig``, ``train``/``pretrain``/``finetune``:
  validation, checkpoints, resume, logs.
* :mod:`synthgen.training.coco`: reading COCO files, shared with :mod:`synthgen.evaluation`.

(No re-exports here: :mod:`synthgen.evaluation` imports ``training.coco``, and the loop
imports the evaluation, so this package stays import-light.)
"""
