"""The pipeline's steps, one per module, each an object whose run(context) returns the
StepRecord of what it did."""
