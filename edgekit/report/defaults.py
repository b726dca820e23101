"""The defaults of a report's own fields (``ReportOptions``), defined once; ``edgekit report``'s flags read
them without importing the report machinery (``edgekit --help`` stays light). The fields it shares with a
compile take ``edgekit.request``'s defaults."""

TARGETS = ("cpu", "intel-cpu")
PRECISIONS = ("fp32", "fp16", "int8")
CALIB_METHODS = ("default",)  # "default": each target's own calibration_method
BENCH_SECONDS = 1.0
