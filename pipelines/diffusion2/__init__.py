"""Diffusion² (``seeds/002_…``): image, video or text -> 4D by sampling a V x F image matrix whose rows are
videos and whose columns are orbits, composing a video and a multi-view denoiser (Theorem 3.1, Eq. 5,
Algorithm 1 with the variance-reducing rollback), then fitting deformable 3D Gaussians to it (Sec. 3.4).

Modules: ``config`` (presets), ``inputs`` (reference images / videos, foreground, recentring),
``sampler`` (the matrix sampler, prior-agnostic), ``denoisers`` (registry priors as EDM denoisers),
``reconstruct`` (the Gaussian fit), ``pipeline`` (``image-to-4d``, ``video-to-4d``, ``text-to-4d-d2``).
"""
