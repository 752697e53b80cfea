package infer

// ImageBytes is imageBytes, for tests.
var ImageBytes = imageBytes
