"""The HTML report (`qtool report`): what quantization will do to a model, as one page.

    data.py        gathers and checks the inputs (calibration, model, sensitivity, compare)
    tensors.py     per tensor: the chosen amax and every other method's, with their cost
    histstats.py   clipped mass and estimated SQNR of a threshold, from the histogram
    weight_layers.py  per layer: weight scale spread and degenerate channels
    results.py     compare results; sensitivity_result.py: sensitivity results
    figures.py     matplotlib figures (optional dependency, imported only when drawing)
    html/          the self-contained page, one module per section
    api.py         write_report(): everything above, written atomically

Submodules are imported explicitly, so importing this package costs nothing.
"""
