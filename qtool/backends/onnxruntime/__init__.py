"""onnxruntime, for all of qtool: the one package that imports it.

    installed.py   whether onnxruntime is installed (doctor, the Q/DQ check)
    providers.py   --provider choices -> execution providers, with the CPU fallback
    session.py     create_session / create_file_session / run_session: every session, one way
    buffers.py     OutputBufferSets: reused output memory for runs that take many tensors out
    runner.py      OnnxRunner: one model's session with TensorRTRunner's face

Nothing is imported here: the CLI imports the providers' choices at start-up, which must not
load onnx and numpy.
"""

