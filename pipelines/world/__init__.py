"""The procedural 4D world: ground-truth scenes for training the priors and measuring every pipeline.

- :mod:`pipelines.world.grammar`: ``WorldSpec``, ``sample_spec(seed)``, captions, ``attributes_from_text``;
- :mod:`pipelines.world.sdf`: shapes as signed distances, motions as poses over t in [0, 1];
- :mod:`pipelines.world.render`: ``render_world`` (RGB, alpha, depth, normal), ``voxelize``;
- :mod:`pipelines.world.scene`: ``WorldScene``, the `Scene` of kind "world";
- :mod:`pipelines.world.datasets`: cached torch datasets (image, multiview, video, matrix, voxels);
- :mod:`pipelines.world.metrics`: PSNR, SSIM, mask IoU, reprojection error, ``evaluate_scene``;
- :mod:`pipelines.world.classifier`: the attribute classifier and ``prompt_accuracy``;
- :mod:`pipelines.world.examples`: writes ``assets/examples``.
"""
