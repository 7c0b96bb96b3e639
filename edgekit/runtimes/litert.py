"""The LiteRT interpreter (`ai_edge_litert`), XNNPACK on or off, with a thread count."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import ModelError
from edgekit.runtimes import dequantize, float_input, quantize


def available() -> bool:
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        return True
    except ImportError:
        return False


class LiteRTSession:
    """One interpreter; resized to the batch size on demand (batch-1 exports resize fine)."""

    def __init__(self, path: Path, threads: int = 1, xnnpack: bool = True) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=threads,
                                           experimental_op_resolver_type=resolver)
        except (ValueError, RuntimeError) as e:
            raise ModelError(f"{path}: LiteRT cannot load this file ({e}); re-export it") from e
        self.path, self.threads, self.xnnpack = path, threads, xnnpack
        inp = self.interpreter.get_input_details()[0]
        out = self.interpreter.get_output_details()[0]
        self.input_index, self.output_index = inp["index"], out["index"]
        self.input_dtype, self.output_dtype = np.dtype(inp["dtype"]), np.dtype(out["dtype"])
        self.input_shape = tuple(int(d) for d in inp["shape_signature"])
        self.input_quant = inp["quantization"] if self.input_dtype.kind == "i" else None
        self.output_quant = out["quantization"] if self.output_dtype.kind == "i" else None
        self._batch = None

    def _resize(self, batch: int) -> None:
        if batch != self._batch:
            shape = [batch, *self.interpreter.get_input_details()[0]["shape"][1:]]
            self.interpreter.resize_tensor_input(self.input_index, shape, strict=False)
            self.interpreter.allocate_tensors()
            self._batch = batch

    def prepare(self, x: np.ndarray) -> np.ndarray:
        x = float_input(x, self.path)
        if self.input_quant is not None:
            scale, zero_point = self.input_quant
            return quantize(x, scale, zero_point, self.input_dtype)
        return np.ascontiguousarray(x, dtype=self.input_dtype)

    def _output(self) -> np.ndarray:
        y = self.interpreter.get_tensor(self.output_index)
        if self.output_quant is not None:
            return dequantize(y, *self.output_quant)
        return y.astype(np.float32, copy=True)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        x = float_input(x, self.path)
        outs = []
        for i in range(0, len(x), batch_size):
            xb = self.prepare(x[i:i + batch_size])
            self._resize(len(xb))
            self.interpreter.set_tensor(self.input_index, xb)
            self.interpreter.invoke()
            outs.append(self._output())
        return np.concatenate(outs)

    def bind(self, x_prepared: np.ndarray):
        self._resize(len(x_prepared))
        self.interpreter.set_tensor(self.input_index, x_prepared)
        return self.interpreter.invoke


def open_session(path: Path, threads: int = 1, xnnpack: bool = True) -> LiteRTSession:
    return LiteRTSession(path, threads=threads, xnnpack=xnnpack)
