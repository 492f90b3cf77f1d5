"""fediguard: keeps child sexual abuse material and other abusive images off fediverse servers."""

import os as _os

# onnxruntime 1.29+ sends usage telemetry to Microsoft from Linux too, and writes a device id and
# an event cache under ~/.cache and the temp folder, unless this is set before it initialises.
# fediguard promises that nothing leaves the machine but to its own workers: always off.
_os.environ["ORT_DISABLE_TELEMETRY"] = "1"

__version__ = "0.1.0"
