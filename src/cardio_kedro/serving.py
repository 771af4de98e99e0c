"""The old home of the HTTP-serving pyfunc: service models registered before the regroup pickle
``cardio_kedro.serving.XrayClassifierService``, so that path keeps resolving. The code lives in
``cardio_kedro.modeling.serving``."""

from cardio_kedro.modeling.serving import XrayClassifierService, finding_outputs

__all__ = ["XrayClassifierService", "finding_outputs"]
