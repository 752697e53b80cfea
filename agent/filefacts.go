package agent

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/edge-agent/edge-agent/internal/smallfirst"
	"github.com/edge-agent/edge-agent/storage"
	"github.com/edge-agent/edge-agent/tflite"
)

// fileFacts are what the agent learned about model files: digests by file
// identity (a changed or replaced file is a new identity: dev, inode,
// size, mtime, ctime) and what a digest's content says (variables, Edge
// TPU). Both are kept in memory and in the state file, so a file is read
// once per identity, by this run or an earlier one; a restart with the
// same files reads none of them before a request needs it.
type fileFacts struct {
	store *storage.Store
	// beforeRead, when set, runs before a model file is read (tests).
	beforeRead func(path string)
	// small lets the small models' work go ahead of a large file's hash.
	small *smallfirst.Gate
	// mu guards digests, content, infos and unsaved.
	mu      sync.Mutex
	digests map[tflite.FileID]string
	content map[string]contentFacts
	// infos are inspected tensors and ops by digest (this run only).
	infos map[string]tflite.ModelInfo
	// unsaved are state-file records not written yet: persist writes them
	// in one commit, off the path of the request that learned them.
	unsaved map[string]string
	kick    chan struct{}
}

// contentFacts are the facts of a digest's bytes, stored as JSON.
type contentFacts struct {
	Variables    bool `json:"variables"`
	NeedsEdgeTPU bool `json:"needs_edgetpu"`
	// Work is an invoke's estimated multiply-accumulates (tflite.FileFacts);
	// a record without it (an older agent's) is read again once.
	Work int64 `json:"work,omitempty"`
}

func newFileFacts(s *storage.Store, beforeRead func(path string), small *smallfirst.Gate) *fileFacts {
	return &fileFacts{store: s, beforeRead: beforeRead, small: small, digests: map[tflite.FileID]string{}, content: map[string]contentFacts{},
		infos: map[string]tflite.ModelInfo{}, unsaved: map[string]string{}, kick: make(chan struct{}, 1)}
}

// persist writes what was learned to the state file until ctx ends, and
// what is left then.
func (f *fileFacts) persist(ctx context.Context) {
	for {
		select {
		case <-f.kick:
			f.save()
		case <-ctx.Done():
			f.save()
			return
		}
	}
}

func (f *fileFacts) save() {
	f.mu.Lock()
	kv := f.unsaved
	f.unsaved = map[string]string{}
	f.mu.Unlock()
	_ = f.store.StoreDigests(kv) // a cache: on failure the next start reads the files again
}

// saveLaterLocked queues a record for persist (called with mu held).
func (f *fileFacts) saveLaterLocked(key, value string) {
	f.unsaved[key] = value
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// LookupDigest and StoreDigest make fileFacts the tflite.DigestCache.
func (f *fileFacts) LookupDigest(id tflite.FileID) (string, bool) {
	f.mu.Lock()
	d, ok := f.digests[id]
	f.mu.Unlock()
	if ok {
		return d, true
	}
	if d, ok = (digestCache{f.store}).LookupDigest(id); ok {
		f.mu.Lock()
		f.digests[id] = d
		f.mu.Unlock()
	}
	return d, ok
}

func (f *fileFacts) StoreDigest(id tflite.FileID, d string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.digests[id] = d
	f.saveLaterLocked(fileKey(id), d)
	return nil
}

// of returns the facts of the file at path, reading it only for what no
// earlier read of the same identity (or of the same content) learned;
// cached says the digest was known.
func (f *fileFacts) of(path string) (facts tflite.FileFacts, cached bool, err error) {
	var c contentFacts
	read := func() error {
		// Maps and verifies the flatbuffer: a missing, truncated or
		// foreign file fails here with its own code, before it is hashed.
		if f.beforeRead != nil {
			f.beforeRead(path)
		}
		facts, err := tflite.ContentFacts(path)
		c = contentFacts{Variables: facts.Variables, NeedsEdgeTPU: facts.NeedsEdgeTPU, Work: facts.Work}
		return err
	}
	id, err := tflite.StatID(path)
	if err != nil {
		if rerr := read(); rerr != nil {
			return facts, false, rerr
		}
		return facts, false, err
	}
	_, cached = f.LookupDigest(id)
	var digest string
	if cached {
		if digest, cached, err = tflite.Digest(path, f); err != nil {
			return facts, false, err
		}
	} else if id.Size <= tinyModelFile {
		// A small file's check and hash take well under a millisecond:
		// one after the other, on the caller's goroutine. A second
		// goroutine would wait for a Go P of its own, behind whatever
		// holds them at a start (a trace: 4 ms for a 400-byte file).
		if err := read(); err != nil {
			return facts, false, err
		}
		// cached stays false: the content was read above, not again below.
		if digest, _, err = tflite.Digest(path, f); err != nil {
			return facts, false, err
		}
	} else {
		// A large file never seen: hashed first, in chunks between which
		// the small models' registrations and loads go first (smallfirst:
		// the reads of a few MB otherwise queue a 400-byte model's read on
		// the disk and its check on the cores), then checked and scanned
		// (the runtime's verifier, in C) from the pages the hash read. The
		// check's error comes first: a missing, truncated or foreign file
		// fails with its own code.
		digest, cached, err = tflite.DigestPaced(path, f, f.small.Pace(context.Background()))
		if rerr := read(); rerr != nil {
			return facts, false, rerr
		}
		if err != nil {
			return facts, false, err
		}
	}
	if known, ok := f.contentOf(digest); ok {
		c = known
	} else {
		if cached { // read above otherwise
			if err := read(); err != nil {
				return facts, false, err
			}
		}
		f.storeContent(digest, c)
	}
	return tflite.FileFacts{ID: id, Digest: digest, Variables: c.Variables, NeedsEdgeTPU: c.NeedsEdgeTPU, Work: c.Work}, cached, nil
}

// known is of without reading the file: nil when something is not known.
func (f *fileFacts) known(path string) *tflite.FileFacts {
	id, err := tflite.StatID(path)
	if err != nil {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	d, ok := f.digests[id]
	if !ok {
		return nil
	}
	c, ok := f.content[d]
	if !ok {
		return nil
	}
	return &tflite.FileFacts{ID: id, Digest: d, Variables: c.Variables, NeedsEdgeTPU: c.NeedsEdgeTPU, Work: c.Work}
}

// inspect is tflite.Inspect once per content: a file whose identity has
// a known digest that was inspected before is not read again.
func (f *fileFacts) inspect(path string) (tflite.ModelInfo, error) {
	if id, err := tflite.StatID(path); err == nil {
		if d, ok := f.LookupDigest(id); ok {
			f.mu.Lock()
			info, ok := f.infos[d]
			f.mu.Unlock()
			if ok {
				info.Path = path
				return info, nil
			}
		}
	}
	info, err := tflite.Inspect(path, f)
	if err != nil {
		return info, err
	}
	f.mu.Lock()
	f.infos[info.SHA256] = info
	f.mu.Unlock()
	return info, nil
}

func contentKey(digest string) string { return "content:" + digest }

func (f *fileFacts) contentOf(digest string) (contentFacts, bool) {
	f.mu.Lock()
	c, ok := f.content[digest]
	f.mu.Unlock()
	if ok {
		return c, true
	}
	raw, ok := f.store.LookupDigest(contentKey(digest))
	if !ok || json.Unmarshal([]byte(raw), &c) != nil || c.Work == 0 {
		return contentFacts{}, false
	}
	f.mu.Lock()
	f.content[digest] = c
	f.mu.Unlock()
	return c, true
}

func (f *fileFacts) storeContent(digest string, c contentFacts) {
	b, _ := json.Marshal(c) // plain struct
	f.mu.Lock()
	defer f.mu.Unlock()
	f.content[digest] = c
	f.saveLaterLocked(contentKey(digest), string(b))
}
