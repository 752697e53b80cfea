package tflite

// ModelInfo describes a model file. Its JSON form is the stable output of
// `edge-agent models inspect --json`.
type ModelInfo struct {
	Path      string       `json:"path"`
	Size      int64        `json:"size"`
	SHA256    string       `json:"sha256"`
	Inputs    []TensorInfo `json:"inputs"`
	Outputs   []TensorInfo `json:"outputs"`
	CustomOps []string     `json:"custom_ops"`
}

// Inspect describes the model at path without allocating tensors, so models
// that need a delegate can be inspected too.
func Inspect(path string, cache DigestCache) (ModelInfo, error) {
	m, err := LoadModel(path)
	if err != nil {
		return ModelInfo{}, err
	}
	defer func() { _ = m.Close() }()
	it, err := NewInterpreter(m, Options{Threads: 1})
	if err != nil {
		return ModelInfo{}, err
	}
	defer it.Close()
	info := ModelInfo{Path: path, Size: m.Size, Inputs: it.Inputs(), Outputs: it.Outputs(), CustomOps: []string{}}
	if ops, err := m.CustomOps(); err == nil {
		info.CustomOps = append(info.CustomOps, ops...)
	}
	if info.SHA256, _, err = Digest(path, cache); err != nil {
		return ModelInfo{}, err
	}
	return info, nil
}
