"""export: ONNX export with a parity gate, versioned model packages, and the runtime scorer."""
