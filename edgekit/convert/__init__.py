"""How each export variant's file is made: one converter per variant (registered against its row),
QAT and calibration, the int8 ONNX routes and their graph passes."""

from edgekit.convert import converters  # noqa: E402,F401  (registers one converter per export variant)
