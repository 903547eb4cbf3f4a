"""4D-fy (text -> 4D) as the ``text-to-4d`` pipeline: hybrid SDS (Algorithm 1) on the static + dynamic field.

``config`` (FourDfyConfig and presets), ``schedule`` (Algorithm 1 as pure functions of the step), ``hybrid``
(priors, the optimisation step, checkpoint state), ``pipeline`` (``run(inputs, config, context)``).
"""
