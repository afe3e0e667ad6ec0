"""What a model is for, as method auto scores it and compare measures it; no imports, so that the
options of both steps (and every command's --help) stay light."""

AUTO = "auto"  # the threshold method that measures the others
TASKS = ("classification",)  # scored besides output SQNR
