"""Names the calibrate and compare options share: method auto, and the tasks it scores as compare
measures them. No imports, so that the options (and every command's --help) stay light."""

AUTO = "auto"  # the threshold method that measures the others
TASKS = ("classification",)  # scored besides output SQNR
