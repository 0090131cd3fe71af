"""The sampler grid (X/Y plot): samplers × step counts or CFG scales, every cell the txt2img run it describes.

``plan`` (the request, the axes, each cell's ``Txt2ImgRequest``), ``prompt`` (one encoding for every cell),
``batch`` (the batched denoising loop and what it implements), ``progress`` (steps over the whole grid), ``draw``
(the labelled sheet) and ``runner`` (``GridRunner``, ``grid_runner``: running it all under the engine's lock).
The X/Y/Z plot: ``axes`` (A1111's axis types and value syntax), ``xyz`` (its request and plan) and ``xyz_runner``
(its cells in groups through ``GridRunner.run_cells``, one sheet per Z value).
"""
