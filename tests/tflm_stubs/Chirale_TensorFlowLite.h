// Test stub: the Chirale_TensorFLowLite library header (empty, as the real one is for our purposes).
