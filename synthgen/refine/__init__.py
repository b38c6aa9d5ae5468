"""SOD-MTGAN (Bai, Zhang, Ding, Ghanem, ECCV 2018): a baseline detector's small regions are
super-resolved 4x by a generator and re-scored and re-boxed by a multi-task discriminator whose
classification and regression losses also train the generator.

* :mod:`.networks`: the generator (de-convolution up-sampling, residual refinement) and the
  discriminator (a torchvision trunk; real/fake, K+1 class and box-offset heads);
* :mod:`.regions`: training and test regions (crops, 4x bicubic down-sampling, targets);
* :mod:`.train`: ``train_mtgan`` (``synthgen train mtgan``);
* :mod:`.apply`: the :class:`~.apply.Refiner`, ``evaluate_refined`` (``synthgen evaluate
  --refine``) and ``refine_folder`` (``synthgen refine``);
* :mod:`.checkpoint`: the run's files.
"""
