package tflite

// FileFacts are what a model file's content says, learned once per file
// identity: the agent keeps them with the model's state and passes them
// in ModelSpec.Facts, so registering in the pool reads nothing again.
type FileFacts struct {
	// ID is the file the facts were read from (its Size is the file's).
	ID     FileID
	Digest string
	// Variables: the model has variable tensors (state between invokes).
	Variables bool
	// NeedsEdgeTPU: the model was compiled for the Edge TPU.
	NeedsEdgeTPU bool
}

// ContentFacts reads the facts of the model at path that come from its
// bytes (not its digest or identity): it maps and verifies the model and
// scans it for variable tensors.
func ContentFacts(path string) (variables, needsEdgeTPU bool, err error) {
	m, err := LoadModel(path)
	if err != nil {
		return false, false, err
	}
	needsEdgeTPU = m.NeedsEdgeTPU()
	if err := m.Close(); err != nil {
		return false, false, err
	}
	return fileHasVariables(path, m.Size), needsEdgeTPU, nil
}

// factsFor returns what s.Facts says of s.Path when they are for the file
// there now (same identity).
func factsFor(s ModelSpec) (size int64, vars, ok bool) {
	if s.Facts == nil {
		return 0, false, false
	}
	id, err := StatID(s.Path)
	if err != nil || id != s.Facts.ID {
		return 0, false, false
	}
	return id.Size, s.Facts.Variables, true
}
