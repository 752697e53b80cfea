package mqtttest

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards TCP connections to a broker. Hold refuses new connections
// (and cuts open ones) until Release, so a test decides who reconnects to a
// restarted broker first.
type Proxy struct {
	l        net.Listener
	upstream string

	// mu guards held and conns.
	mu    sync.Mutex
	held  bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// StartProxy forwards to b until the test ends.
func StartProxy(t testing.TB, b *Broker) *Proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{l: l, upstream: fmt.Sprintf("127.0.0.1:%d", b.port), conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = l.Close()
		p.Hold()
		p.wg.Wait()
	})
	return p
}

// URL is the proxy's address for clients.
func (p *Proxy) URL() string { return "tcp://" + p.l.Addr().String() }

// Hold refuses new connections and closes the open ones.
func (p *Proxy) Hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.held = true
	for c := range p.conns {
		_ = c.Close()
	}
}

// Release accepts connections again.
func (p *Proxy) Release() {
	p.mu.Lock()
	p.held = false
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		held := p.held
		p.mu.Unlock()
		if held {
			_ = c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			_ = c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			_ = dst.Close()
			_ = src.Close()
			p.mu.Lock()
			delete(p.conns, dst)
			delete(p.conns, src)
			p.mu.Unlock()
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}
