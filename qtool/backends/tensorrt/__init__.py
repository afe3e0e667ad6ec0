"""TensorRT backend: build engines from ONNX models and run them (TensorRT 10 and 11).

    adapter.py   the differences between TensorRT 10 and 11, in one object
    shapes.py    --shapes parsing into optimization profiles
    build_options.py  the build step's options (BUILD, BuildOptions)
    build_plan.py     what a build needs and checks before TensorRT: plan_build
    builder_setup.py  the builder config from the options
    build.py     build_engine
    build_result.py   what a build reports
    inspect.py   engine-inspector JSON -> per-layer precisions (pure)
    cuda.py      device memory and streams via cuda-python or pycuda
    runtime.py   TensorRTRunner (a context manager: run(feeds) -> outputs)
    run.py       run_engine: an engine over a data set -> outputs.npz
    outputs.py   merging batches and writing .npz atomically
    logger.py    one TensorRT logger per process, its messages to qtool's log

No module here imports tensorrt or a CUDA binding at import time; qtool.backends.imports, below
this package, does it when asked.
"""
