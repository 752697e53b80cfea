package agent

import (
	"slices"
	"sync"
)

// registry is the agent's models: their states by id in configured order,
// the ones a start registers after it accepts requests, and the facts of
// their files.
//
// Locks, in this order only: prep → mu. prep serialises preparing models
// (start, reload, updates, applying what the calibrator measured) and is
// never held while a model is loaded or measured, so requests, plans and
// status never wait behind one. mu guards models, order and the fields of
// every state in them; it is held only to read or swap states, never
// across a C call or a write to disk.
type registry struct {
	prep sync.Mutex

	mu     sync.Mutex
	models map[string]*modelState // by id, failed ones included
	order  []string               // ids as configured, for reports

	// pending are the models the start registers after it accepts
	// requests (startreg.go); nil before Start.
	pending *pendingModels
	// facts are the model files' facts by identity (filefacts.go); nil
	// before Start.
	facts *fileFacts
}

func newRegistry() *registry { return &registry{models: map[string]*modelState{}} }

// get is model id's state.
func (r *registry) get(id string) (*modelState, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.models[id]
	return st, ok
}

// current reports whether st is still its model's state (no update,
// reload or calibration replaced it).
func (r *registry) current(st *modelState) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return st != nil && r.models[st.cfg.ID] == st
}

// locked runs f with mu held: f reads or changes fields of states in the
// registry, and calls nothing that locks.
func (r *registry) locked(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f()
}

// each runs f on every state in configured order, with mu held (as
// locked).
func (r *registry) each(f func(st *modelState)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range r.order {
		f(r.models[id])
	}
}

// byID is a copy of the map.
func (r *registry) byID() map[string]*modelState {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]*modelState, len(r.models))
	for id, st := range r.models {
		out[id] = st
	}
	return out
}

// set makes st its model's state; a new model takes its configured place
// among those registered, whichever registered first. It returns st.queued
// as set, read under mu (the calibrator changes it once st is listed).
func (r *registry) set(st *modelState) (queued bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.models[st.cfg.ID]; !ok {
		i := len(r.order)
		if r.pending != nil {
			for i > 0 && r.pending.before(st.cfg.ID, r.order[i-1]) {
				i--
			}
		}
		r.order = slices.Insert(r.order, i, st.cfg.ID)
	}
	r.models[st.cfg.ID] = st
	return st.queued
}

// remove forgets model id.
func (r *registry) remove(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.models, id)
	r.order = slices.DeleteFunc(r.order, func(s string) bool { return s == id })
}
