"""Evaluation, benchmarking and reports.

The package is callable: ``edgekit.report(...)`` is ``edgekit.report.report.report(...)`` (a
``ReportRequest``, or its fields as keywords), so the public function and this package share one name.
"""

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    """``edgekit.report(...)`` calls the public ``report`` function (imported on first call)."""

    @property
    def __wrapped__(self) -> Any:  # inspect.signature(edgekit.report) and help() show the function's
        from edgekit.report.report import report

        return report

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
