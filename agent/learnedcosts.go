package agent

// The pool's learned cold costs (what each model's misses really cost,
// tflite/coldcost.go) outlive the process: stored with the
// calibration they were learned under, handed back at registration, so a
// restart ranks models by them at once.

import "time"

// saveLearnedCosts stores the pool's learned costs of every calibrated
// model with its calibration. Called on Close, the loops stopped.
func (a *Agent) saveLearnedCosts() {
	if a.store == nil {
		return
	}
	learned := a.pool.LearnedCosts()
	type rec struct {
		st     *modelState
		misses []time.Duration
	}
	var recs []rec
	a.reg.each(func(st *modelState) {
		if m := learned[st.cfg.ID]; len(m) > 0 && st.cal.Threads > 0 && !st.cal.Pending && st.cal.Failed == "" {
			recs = append(recs, rec{st, m})
		}
	})
	for _, r := range recs {
		if err := a.store.PutLearnedMisses(r.st.cfg.ID, r.st.cal.Validity, r.misses); err != nil {
			a.log.Warn("learned cold costs not stored", "model", r.st.cfg.ID, "err", err)
		}
	}
}
