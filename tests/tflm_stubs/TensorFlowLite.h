// Test stub: the tflite-micro-arduino-examples library header (empty, as the real one is for our purposes).
