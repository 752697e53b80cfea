package agent

// The HTTP listener ([http] listen, old name [metrics] listen): /metrics
// and the Open Inference Protocol under /v2 (agent/oip), behind a bearer
// token when [http] token_file is set.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/edge-agent/edge-agent/agent/oip"
	"github.com/edge-agent/edge-agent/errcode"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/tflite"
)

// ErrVersionNotServing: an infer named a kept version other than the one
// serving (a rollback serves it again).
var ErrVersionNotServing = errcode.New("version_not_serving", "that version is kept but not serving (roll back to serve it)")

// startHTTP listens on http.listen and serves there until runCtx ends. A
// listen that fails, or a token file that cannot be read, is logged and
// the agent serves without HTTP (never without its token).
func (a *Agent) startHTTP(runCtx context.Context) {
	cfg := a.config()
	addr := cfg.httpListen()
	if addr == "" {
		return
	}
	var token []byte
	if f := cfg.HTTP.TokenFile; f != "" {
		b, err := os.ReadFile(f)
		if token = bytes.TrimSpace(b); err != nil || len(token) == 0 {
			a.log.Error("http: token_file unreadable or empty; not serving HTTP", "token_file", f, "err", err)
			return
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		a.log.Error("http: cannot listen; no /metrics and no /v2", "listen", addr, "err", err)
		return
	}
	h := oip.Handler(oip.Options{Backend: &oipBackend{a: a}, Token: token, MaxBody: int64(cfg.MQTT.MaxPayload),
		MaxInFlight: cfg.MQTT.CommandQueue + cfg.MQTT.CommandWorkers, Name: "edge-agent", Version: Version, Log: a.log,
		Extra: map[string]http.Handler{"/metrics": a.tel.prom.Handler()}})
	if !mqtt.IsLoopback(addr) && token == nil {
		a.log.Warn("http: serving anonymously on a non-loopback address (http.allow_anonymous)", "listen", addr)
	}
	a.log.Info("http: serving /metrics and /v2", "listen", ln.Addr().String(), "token", token != nil)
	a.run.spawn(runCtx, func(ctx context.Context) { a.serveHTTP(ctx, ln, h) })
}

// serveHTTP serves h on ln until ctx ends.
func (a *Agent) serveHTTP(ctx context.Context, ln net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second,
		BaseContext: func(net.Listener) context.Context { return ctx }}
	done := make(chan struct{})
	go func() { // owned: ends when Serve returns, which Shutdown below causes
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("http: server stopped", "err", err)
		}
	}()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	<-done
}

// oipBackend is the agent as the Open Inference Protocol adapter sees it.
type oipBackend struct {
	a *Agent
	// metaMu guards meta: each model's metadata by "id@sha256".
	metaMu sync.Mutex
	meta   map[string]oip.Model
}

func (b *oipBackend) Live() bool { return b.a.run.ctx != nil && b.a.run.ctx.Err() == nil }

// Ready: the pool is up and some model can answer.
func (b *oipBackend) Ready() bool {
	if !b.Live() || b.a.pool == nil {
		return false
	}
	for _, r := range b.a.ready.models() {
		if r.State != StateFailed {
			return true
		}
	}
	return false
}

// serving is model name's served file and digest.
func (b *oipBackend) serving(name string) (path, digest string, ok bool) {
	b.a.reg.locked(func() {
		var st *modelState
		if st, ok = b.a.reg.models[name]; ok {
			path, digest = st.path, st.digest
		}
	})
	return path, digest, ok
}

// Model is read once per version (inspecting builds an interpreter, and
// every infer asks), outside the lock: two first requests may both
// inspect, and one result is kept.
func (b *oipBackend) Model(name string) (oip.Model, bool) {
	path, digest, ok := b.serving(name)
	if !ok {
		return oip.Model{}, false
	}
	key := name + "@" + digest
	b.metaMu.Lock()
	m, ok := b.meta[key]
	b.metaMu.Unlock()
	if ok {
		return m, true
	}
	m = oip.Model{Name: name, Versions: []string{digest}}
	if v, err := b.a.store.Versions(name); err == nil && v.Previous != "" && v.Previous != digest {
		if _, err := os.Stat(b.a.upd.VersionFile(name, v.Previous)); err == nil {
			m.Versions = append(m.Versions, v.Previous)
		}
	}
	info, err := b.a.reg.facts.inspect(path)
	if err != nil {
		return m, true // a model that cannot run here: no tensors to show, nothing kept
	}
	m.Inputs, m.Outputs = tensorMetas(info.Inputs), tensorMetas(info.Outputs)
	b.metaMu.Lock()
	if b.meta == nil {
		b.meta = map[string]oip.Model{}
	}
	b.meta[key] = m
	b.metaMu.Unlock()
	return m, true
}

// ModelReady: the serving version is warm or loadable.
func (b *oipBackend) ModelReady(name, version string) bool {
	_, digest, ok := b.serving(name)
	if !ok || (version != "" && version != digest) || !b.Live() {
		return false
	}
	r, ok := b.a.ready.models()[name]
	return ok && r.State != StateFailed
}

func (b *oipBackend) Infer(ctx context.Context, q oip.Request) (oip.Response, error) {
	_, digest, ok := b.serving(q.Model)
	if ok && q.Version != "" && q.Version != digest {
		return oip.Response{}, fmt.Errorf("model %q version %s: %w", q.Model, q.Version, ErrVersionNotServing)
	}
	rep, res, err := b.a.infer(ctx, inferCall{model: q.Model, tensor: q.Tensor, image: q.Image, top: q.Classes, transport: "http"})
	if err != nil {
		return oip.Response{}, err
	}
	if q.Classes > 0 && len(res.Top) == 0 {
		return oip.Response{}, badCommand("classification: model %q is not a classifier", rep.Model)
	}
	_, answered, _ := b.serving(rep.Model)
	out := oip.Response{Model: rep.Model, Version: answered}
	if len(res.Outputs) > 0 {
		for _, o := range res.Outputs {
			out.Outputs = append(out.Outputs, oip.Tensor{TensorMeta: tensorMeta(o.Name, o.Type, o.Shape), Data: o.Data})
		}
	} else {
		out.Outputs = []oip.Tensor{{TensorMeta: tensorMeta(res.Output.Name, res.Output.Type, res.Output.Shape), Data: res.Raw}}
	}
	for _, c := range res.Top {
		out.Top = append(out.Top, oip.Class{Index: c.Index, Label: c.Label, Score: c.Score})
	}
	return out, nil
}

func tensorMetas(ts []tflite.TensorInfo) []oip.TensorMeta {
	out := make([]oip.TensorMeta, len(ts))
	for i, t := range ts {
		out[i] = tensorMeta(t.Name, t.Type, t.Shape)
	}
	return out
}

func tensorMeta(name, typ string, shape []int) oip.TensorMeta {
	s := make([]int64, len(shape))
	for i, d := range shape {
		s[i] = int64(d)
	}
	return oip.TensorMeta{Name: name, Datatype: oip.Datatype(typ), Shape: s}
}
