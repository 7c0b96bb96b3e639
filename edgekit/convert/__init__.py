"""How each export variant's file is made: one converter per variant (registered against its row),
QAT and calibration, the int8 ONNX routes and their graph passes."""
