package redistest

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP proxy on loopback in front of a Redis, for fault tests.
// It can stall the subscription connections (those that sent SUBSCRIBE),
// or every connection, silently: it stops forwarding either way, and
// closes nothing, as a network that drops packets would.
type Proxy struct {
	ln      net.Listener
	target  string
	stalled atomic.Bool  // the subscription connections
	all     atomic.Bool  // every connection
	subs    atomic.Int32 // subscription connections open now
}

// StartProxy proxies to target (host:port) until the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// StallSubscriptions stalls (on) or resumes the subscription connections,
// those open now and those opened later.
func (p *Proxy) StallSubscriptions(on bool) { p.stalled.Store(on) }

// StallAll stalls (on) or resumes every connection: a store that
// accepts connections and never answers.
func (p *Proxy) StallAll(on bool) { p.all.Store(on) }

// Subscriptions is how many subscription connections are open.
func (p *Proxy) Subscriptions() int { return int(p.subs.Load()) }

func (p *Proxy) serve(c net.Conn) {
	defer c.Close()
	r, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		return
	}
	defer r.Close()
	var sub atomic.Bool
	defer func() {
		if sub.Load() {
			p.subs.Add(-1)
		}
	}()
	go func() {
		defer r.Close()
		p.pipe(r, c, func(b []byte) {
			if !sub.Load() && bytes.Contains(bytes.ToLower(b), []byte("subscribe")) && sub.CompareAndSwap(false, true) {
				p.subs.Add(1)
			}
		}, &sub)
	}()
	p.pipe(c, r, func([]byte) {}, &sub)
}

// pipe copies src to dst, chunk by chunk, holding each chunk of a
// subscription connection while subscriptions are stalled, and every
// chunk while all are.
func (p *Proxy) pipe(dst io.Writer, src io.Reader, see func([]byte), sub *atomic.Bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			see(buf[:n])
			for sub.Load() && p.stalled.Load() || p.all.Load() {
				time.Sleep(5 * time.Millisecond)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
