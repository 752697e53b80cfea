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
	// Work is an invoke's multiply-accumulates, estimated from the graph
	// (0: not known).
	Work int64
}

// ContentFacts reads the facts of the model at path that come from its
// bytes (not its digest or identity): it maps and verifies the model and
// scans it for variable tensors and its work. ID and Digest are left zero.
func ContentFacts(path string) (FileFacts, error) {
	m, err := LoadModel(path)
	if err != nil {
		return FileFacts{}, err
	}
	facts := FileFacts{NeedsEdgeTPU: m.NeedsEdgeTPU()}
	if err := m.Close(); err != nil {
		return FileFacts{}, err
	}
	facts.Variables, facts.Work = scanFile(path, m.Size)
	return facts, nil
}

// factsFor returns what s.Facts says of s.Path when they are for the file
// there now (same identity).
func factsFor(s ModelSpec) (fileInfo, bool) {
	if s.Facts == nil {
		return fileInfo{}, false
	}
	id, err := StatID(s.Path)
	if err != nil || id != s.Facts.ID {
		return fileInfo{}, false
	}
	return fileInfo{size: id.Size, vars: s.Facts.Variables, work: s.Facts.Work}, true
}
