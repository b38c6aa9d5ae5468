"""Learned object insertion: DetectorGAN (Liu, Adeli, et al., ICCV 2019) and its baselines.

A generator learns to insert an object into a clean image at a given box, trained with a
CycleGAN (insert / remove), a local discriminator on the box, an L1 loss to the real object
whose box it fills, and a detector in the loop whose loss on *real* images after one unrolled
step on real + synthetic images is differentiated back into the generator exactly.

* :mod:`.networks`: ResNet generator with a box-mask channel, 70x70 PatchGAN, image pool.
* :mod:`.unroll`: the detector's loss at explicit weights and the unrolled step.
* :mod:`.methods`: ``detectorgan``, ``no-unroll``, ``acgan``, ``cyclegan`` (registry).
* :mod:`.boxes`: where objects go (the paper's match rule, a learned distribution, a file).
* :mod:`.data`, :mod:`.train`: training (``synthgen train detectorgan``).
* :mod:`.checkpoint`: the run checkpoint; :mod:`.render`: ``synthgen insert``.

(No re-exports: importing the package must not import torch.)
"""
