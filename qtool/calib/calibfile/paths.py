"""The files one calibration consists of, for the output guard (qtool.io.outputs), which must
not overwrite any of them but knows nothing of calibration files itself."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from qtool.calib.calibfile.reader import read_calibration
from qtool.calib.calibfile.writer import histogram_path_for
from qtool.errors import QtoolError


def calibration_files(*calibrations: str | os.PathLike | None) -> list[Path]:
    """Each calibration file, the histogram file its name implies and the one it records (when
    it can be read); None entries are skipped."""
    files: list[Path] = []
    for calib in calibrations:
        if calib is None:
            continue
        calib = Path(calib)
        files += [calib, histogram_path_for(calib)]
        if calib.is_file():
            with contextlib.suppress(QtoolError):
                recorded = read_calibration(calib).histogram_path()
                if recorded is not None:
                    files.append(recorded)
    return files
